"""The GPU check: the paper's model shapes on one GPU, unattended, nothing downloaded (`make gpu-check`).

    python -m pilaf_exp.bench.gpu_check OUT_DIR [--device cuda] [--tiny] [--steps 3] [--batch 8]
                                        [--prompt-length 64] [--new-tokens 64] [--llama-layers 4]

Random-initialised bf16 models built from configs at the real shapes: Qwen2.5-0.5B (all 24
layers) and Llama-3.1-8B with `--llama-layers` of its 32 layers, each as policy and reference,
with an oracle of Skywork-Reward-Llama-3.1-8B's shape (2 layers, the policy's vocabulary so tokens
pass through). Per shape:
- per sampler (every conf/sampler/*.yaml): online DPO steps/s and pairs/s (sample, label, DPO
  step with AdamW, as the training step does, without Lightning), after one untimed step;
- decode tokens/s of vanilla sampling with the `stacked` and the `transformers` engine;
- the interpolated (PILAF) decode of the lean engine against the models' own forward in bf16:
  the largest first-step logit difference and the share of identical tokens from one seed;
- peak GPU memory beside the README's estimate for the same shape (parameters x bytes + KV cache).
One JSON (`gpu_check.json`) and one markdown table (`gpu_check.md`) go to OUT_DIR.
`--device cpu --tiny` is the rehearsal at tiny shapes that CI runs (tests/bench/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, LlamaConfig, Qwen2Config

from pilaf_exp.infra.cli import compose_config
from pilaf_exp.labelling.oracle import RewardOracle
from pilaf_exp.models.logprobs import sequence_logprob
from pilaf_exp.sampling.decoding import (
    MINUS,
    PLUS,
    POLICY,
    DecodeSpec,
    decode,
    kv_cache_bytes_per_position,
    mixture_weights,
)
from pilaf_exp.sampling.engines import make_runners, mixed_logits
from pilaf_exp.sampling.samplers import VanillaSampler
from pilaf_exp.training.dpo import dpo_loss

SAMPLERS = Path(__file__).resolve().parents[2] / "conf" / "sampler"
LLAMA_8B = {"vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32}
LLAMA_8B |= {"num_key_value_heads": 8, "rope_theta": 500000.0, "max_position_embeddings": 8192}
QWEN_05B = {"vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24}
QWEN_05B |= {"num_attention_heads": 14, "num_key_value_heads": 2, "tie_word_embeddings": True, "rope_theta": 1e6}
TINY = {"vocab_size": 256, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
TINY |= {"num_attention_heads": 4, "num_key_value_heads": 2}


def shapes(args: argparse.Namespace) -> dict[str, tuple[type, dict]]:
    """name -> (config class, policy config); the oracle takes the Llama-8B shape (tiny: the policy's)."""
    if args.tiny:
        return {"tiny-llama": (LlamaConfig, TINY), "tiny-qwen2": (Qwen2Config, TINY | {"tie_word_embeddings": True})}
    llama = LLAMA_8B | {"num_hidden_layers": args.llama_layers}
    return {"qwen2.5-0.5b": (Qwen2Config, QWEN_05B), f"llama-3.1-8b-{args.llama_layers}-layers": (LlamaConfig, llama)}


def build(kind: type, config: dict, args: argparse.Namespace, seed: int, oracle: bool = False) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cfg = kind(**config, attn_implementation="sdpa")
        if oracle:
            cfg.num_labels, cfg.pad_token_id = 1, config["vocab_size"] - 1
            model = AutoModelForSequenceClassification.from_config(cfg)
        else:
            model = AutoModelForCausalLM.from_config(cfg)
    return model.to(device=args.device, dtype=torch.bfloat16)


def estimate_gb(policy: nn.Module, oracle: nn.Module, rows: int, positions: int) -> float:
    """The README's estimate: policy 2 + 2 + 4 bytes per parameter (weights, gradients, AdamW),
    reference and oracle 2 each, a decode chunk's KV cache with both models on every row."""
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    kv = 2 * rows * positions * kv_cache_bytes_per_position(policy)
    return (8 * count(policy) + 2 * count(policy) + 2 * count(oracle) + kv) / 1e9


def timed(device: str, work) -> tuple[float, object]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = work()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def online_dpo(parts: dict, sampler, args: argparse.Namespace, prompts: tuple) -> dict:
    """Steps/s and pairs/s of sample -> label -> DPO step; the first step is not timed."""
    policy, reference, oracle = parts["policy"], parts["reference"], parts["oracle"]
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-6)
    spec = DecodeSpec(args.new_tokens, engine="auto")
    generator = torch.Generator(device=args.device).manual_seed(0)
    losses, seconds = [], []

    def step() -> float:
        pairs = sampler.sample(policy.eval(), reference, *prompts, spec, generator)
        responses, masks = torch.cat([pairs.response_a, pairs.response_b]), torch.cat([pairs.mask_a, pairs.mask_b])
        ids, mask = pairs.prompt_ids.repeat(2, 1), pairs.prompt_mask.repeat(2, 1)
        score_a, score_b = oracle.score(ids, mask, responses, masks).chunk(2)
        logp = sequence_logprob(policy.train(), ids, mask, responses, masks).chunk(2)
        with torch.no_grad():
            ref = sequence_logprob(reference, ids, mask, responses, masks).chunk(2)
        first = score_a >= score_b  # the preferred response as chosen
        pick = lambda x: (torch.where(first, x[0], x[1]), torch.where(first, x[1], x[0]))  # noqa: E731
        loss, _ = dpo_loss(*pick(logp), *pick(ref), beta=0.1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    step()
    for _ in range(args.steps):
        took, loss = timed(args.device, step)
        seconds.append(took)
        losses.append(loss)
    per_step = sum(seconds) / len(seconds)
    return {"steps_per_s": 1 / per_step, "pairs_per_s": args.batch / per_step, "losses": losses}


def decode_rate(parts: dict, engine: str, args: argparse.Namespace, prompts: tuple) -> float:
    """Generated tokens/s of vanilla pair sampling (no EOS: every response is new_tokens long)."""
    spec = DecodeSpec(args.new_tokens, engine=engine)
    generator = torch.Generator(device=args.device).manual_seed(0)
    run = lambda: VanillaSampler().sample(parts["policy"], parts["reference"], *prompts, spec, generator)  # noqa: E731
    run()  # warm-up
    took, _ = timed(args.device, run)
    return 2 * args.batch * args.new_tokens / took


def interpolated_exactness(parts: dict, args: argparse.Namespace, prompts: tuple) -> dict:
    """The lean (stacked) engine against the models' own forward on PILAF's mixture rows, in bf16."""
    policy, reference = parts["policy"], parts["reference"]
    ids, mask = (t.repeat(2, 1) for t in prompts)
    sources = torch.tensor([POLICY, PLUS, MINUS, PLUS] * len(ids), device=ids.device)[: len(ids)]
    table = mixture_weights(sources, 0.5)  # [R, 2] on (policy, reference)
    positions = ids.shape[1] + args.new_tokens
    with torch.inference_mode():
        first = [
            mixed_logits(make_runners(policy, reference, table, positions, e), ids, mask, mask.cumsum(-1) - 1)
            for e in ("stacked", "transformers")
        ]
    outs = [
        decode(policy, reference, ids, mask, sources, DecodeSpec(args.new_tokens, engine=e), _gen(args), coef=0.5)
        for e in ("stacked", "transformers")
    ]
    scale = first[1].abs().max().item()
    return {
        "first_step_max_logit_diff": (first[0] - first[1]).abs().max().item(),
        "first_step_logit_scale": scale,
        "identical_tokens": (outs[0].tokens == outs[1].tokens).float().mean().item(),
    }


def _gen(args: argparse.Namespace) -> torch.Generator:
    return torch.Generator(device=args.device).manual_seed(1)


def check_shape(kind: type, config: dict, args: argparse.Namespace) -> dict:
    oracle_config = TINY if args.tiny else LLAMA_8B | {"num_hidden_layers": 2}
    oracle_config = oracle_config | {"vocab_size": config["vocab_size"]}
    parts = {
        "policy": build(kind, config, args, seed=0),
        "reference": build(kind, config, args, seed=1).requires_grad_(False).eval(),
        "oracle": RewardOracle(build(LlamaConfig, oracle_config, args, 2, oracle=True), config["vocab_size"] - 1),
    }
    prompt_ids = torch.randint(0, config["vocab_size"] - 1, (args.batch, args.prompt_length), device=args.device)
    prompts = (prompt_ids, torch.ones_like(prompt_ids))
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    result: dict = {"samplers": {}}
    for path in sorted(SAMPLERS.glob("*.yaml")):
        sampler = instantiate(compose_config(f"sampler={path.stem}").sampler)  # with the default algo.beta
        result["samplers"][path.stem] = online_dpo(parts, sampler, args, prompts)
    result["decode_tokens_per_s"] = {e: decode_rate(parts, e, args, prompts) for e in ("stacked", "transformers")}
    result["interpolated_bf16"] = interpolated_exactness(parts, args, prompts)
    cuda = args.device.startswith("cuda")
    result["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9 if cuda else None
    positions = args.prompt_length + args.new_tokens
    result["readme_estimate_gb"] = estimate_gb(parts["policy"], parts["oracle"], 2 * args.batch, positions)
    return result


def markdown(results: dict, args: argparse.Namespace) -> str:
    lines = [
        f"GPU check on `{args.device}` (bf16, batch {args.batch} pairs, prompt {args.prompt_length}, "
        f"{args.new_tokens} new tokens, {args.steps} timed steps)",
        "",
        "| shape | sampler | DPO steps/s | pairs/s |",
        "|---|---|---|---|",
    ]
    for shape, r in results.items():
        lines += [
            f"| {shape} | {name} | {s['steps_per_s']:.3g} | {s['pairs_per_s']:.3g} |"
            for name, s in r["samplers"].items()
        ]
    lines += [
        "",
        "| shape | decode tok/s stacked | transformers | max logit diff (bf16) | identical tokens | peak GB "
        "| README estimate GB |",
        "|---|---|---|---|---|---|---|",
    ]
    for shape, r in results.items():
        d, x, peak = r["decode_tokens_per_s"], r["interpolated_bf16"], r["peak_memory_gb"]
        lines.append(
            f"| {shape} | {d['stacked']:.4g} | {d['transformers']:.4g} | {x['first_step_max_logit_diff']:.3g} "
            f"(of {x['first_step_logit_scale']:.3g}) | {x['identical_tokens']:.1%} | "
            f"{'-' if peak is None else f'{peak:.2f}'} | {r['readme_estimate_gb']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes: the CPU rehearsal")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt-length", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--llama-layers", type=int, default=4)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here (use --device cpu --tiny for the rehearsal)")
    results = {name: check_shape(kind, config, args) for name, (kind, config) in shapes(args).items()}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    record = {"args": vars(args) | {"out_dir": str(args.out_dir)}, "results": results}
    (args.out_dir / "gpu_check.json").write_text(json.dumps(record, indent=2))
    (args.out_dir / "gpu_check.md").write_text(markdown(results, args))
    print(markdown(results, args))


if __name__ == "__main__":
    main()
