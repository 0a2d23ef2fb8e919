"""`python -m pilaf_exp.analysis.gradients [overrides] [--checkpoint PATH ...] [--out DIR]`: does each
sampler's expected DPO gradient point along the gradient of J? (docs/results/gradients.md)

For a policy on an enumerable task (the embedded one) and the first `eval.exact_prompts` test prompts:
the exact grad J (every response enumerated), each sampler's expected DPO-loss gradient from its own
`sample()` (Bradley-Terry label probabilities in place of labels; two independent halves of
`--pairs` pairs per prompt), and per sampler the cosine of minus that gradient with grad J, the
first-order gain in J per annotation of a plain SGD step of size `--lr` (training uses AdamW), and
the signal-to-noise ratio along grad J of a batch of `algo.batch_size` pairs with sampled labels.
One JSON file per policy in `--out`; `python -m pilaf_exp.analysis.gradients_report DIR` tabulates.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from pilaf_exp.infra.cli import bad_group_choices, compose_config, sampler_names
from pilaf_exp.infra.errors import ConfigError

DEFAULT_PAIRS = 4096


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], prog="python -m pilaf_exp.analysis.gradients"
    )
    parser.add_argument("overrides", nargs="*", help="config overrides as for python -m pilaf_exp (e.g. seed=3)")
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        help="a run's checkpoints/step_*.ckpt, a save_pretrained directory, or 'sft' for the SFT "
        "policy (the default); repeat for several",
    )
    parser.add_argument("--pairs", type=int, default=DEFAULT_PAIRS, help="pairs per prompt in each of the two halves")
    parser.add_argument(
        "--pairs-for",
        action="append",
        default=[],
        metavar="SAMPLER=N",
        help="another --pairs for one sampler (e.g. best_of_n=1024)",
    )
    parser.add_argument("--samplers", default=None, help="comma-separated subset (default: all of conf/sampler/)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="an extra sampler, [LABEL=]NAME:KEY=VALUE[:KEY=VALUE], e.g. pilaf:sampler.coef=0.05 (reported as "
        "pilaf[coef=0.05]) or t_pilaf=pilaf:sampler._target_=pilaf_exp.analysis.theory.SequencePilafSampler",
    )
    parser.add_argument(
        "--lr", type=float, default=None, help="SGD step size of the first-order gain (default: algo.lr)"
    )
    parser.add_argument("--out", type=Path, default=Path("gradients"), help="where the JSON results go")
    args = parser.parse_args(argv)
    try:
        args.pairs_for = {name: int(count) for name, _, count in (item.partition("=") for item in args.pairs_for)}
    except ValueError:
        parser.error("--pairs-for takes SAMPLER=N")
    if min([args.pairs, *args.pairs_for.values()]) < 2:
        parser.error("--pairs and --pairs-for must be at least 2")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    problems = bad_group_choices(args.overrides)
    if problems:
        print("\n".join(f"error: {p}" for p in problems), file=sys.stderr)
        sys.exit(2)
    from pilaf_exp.infra.quiet import quiet_framework_chatter  # heavy imports after the argument checks

    quiet_framework_chatter()
    try:
        for path in run(args):
            print(f"wrote {path}")
    except ConfigError as error:
        for line in str(error).splitlines():
            print(f"error: {line}", file=sys.stderr)
        sys.exit(2)


def run(args: argparse.Namespace) -> list[Path]:
    """Analyse every requested policy; one JSON file each."""
    import torch

    from pilaf_exp.analysis.inputs import load_policy, samplers_of
    from pilaf_exp.analysis.measure import Setting, analyse
    from pilaf_exp.build import build_world, decode_spec, response_table
    from pilaf_exp.config_checks import validate

    started = time.perf_counter()
    cfg = compose_config(*args.overrides)
    validate(cfg)
    paths = _checked_paths(args.checkpoint, cfg)
    names = args.samplers.split(",") if args.samplers else sampler_names()
    samplers = samplers_of(args.overrides, names, args.variant)
    world = build_world(cfg)
    table = response_table(cfg, world)
    if table is None:
        raise ConfigError("the analysis enumerates responses: it needs an enumerable task and eval.exact_prompts > 0")
    spec = decode_spec(cfg, world.task, 1.0)
    lr = float(cfg.algo.lr) if args.lr is None else args.lr
    setting = Setting(float(cfg.algo.beta), lr, int(cfg.algo.batch_size), args.pairs, args.pairs_for)
    setup = time.perf_counter() - started
    written = []
    for path in paths:
        began = time.perf_counter()
        policy = load_policy(path, world.reference)
        result = analyse(
            policy.model,
            world.reference,
            table,
            {n: e.sampler for n, e in samplers.items()},
            spec,
            setting,
            int(cfg.seed),
        )
        result["seconds"] |= {"setup": setup, "policy": time.perf_counter() - began}
        result["machine"] = {"threads": torch.get_num_threads(), "load_average": os.getloadavg()[0]}
        run_seed = policy.run_config.get("seed") if policy.run_config is not None else None
        record = {
            "label": policy.label,
            "source": policy.source,
            "step": policy.step,
            "seed": int(cfg.seed),
            "run_seed": run_seed,
            "overrides": list(args.overrides),
            "prompts": len(table.prompts),
            "pairs_per_prompt_half": {n: setting.pairs_of(n) for n in samplers},
            "beta": setting.beta,
            "lr": lr,
            "batch_size": setting.batch_size,
            "sampler_configs": {n: e.config for n, e in samplers.items()},
            **result,
        }
        args.out.mkdir(parents=True, exist_ok=True)
        target = args.out / f"{policy.label}_seed{int(cfg.seed)}.json"
        target.write_text(json.dumps(record, indent=2))
        print(summary_lines(record))
        written.append(target)
    return written


def _checked_paths(checkpoints: list[str] | None, cfg) -> list[Path | None]:
    """The policies to analyse (None = the SFT policy), checked before anything is built."""
    from pilaf_exp.analysis.inputs import check_same_world, run_config

    if float(cfg.algo.temperature) != 1.0 or float(cfg.eval.temperature) != 1.0:
        raise ConfigError("the analysis is for sampling at temperature 1 (algo.temperature, eval.temperature)")
    paths = [None if path == "sft" else Path(path) for path in checkpoints or ["sft"]]
    for path in paths:
        if path is not None and not path.exists():
            raise ConfigError(f"--checkpoint {path} does not exist")
        check_same_world(run_config(path), cfg)
    return paths


def summary_lines(record: dict) -> str:
    head = f"{record['label']} (step {record['step']}, seed {record['seed']})"
    objective, seconds = record["objective"]["J"], record["seconds"]["policy"]
    lines = [f"{head}: exact J = {objective:.4f}, |grad J| = {record['grad_J_norm']:.4g}, {seconds:.0f} s"]
    lines.append(f"{'sampler':<22}{'cosine':>16}{'gain/annotation':>26}{'SNR':>8}")
    for name, r in record["samplers"].items():
        cosine = f"{r['cosine']:>9.4f} ±{r['cosine_mc_error']:.4f}"
        gain = f"{r['gain_per_annotation']:>15.3e} ±{r['gain_per_annotation_se']:.1e}"
        lines.append(f"{name:<22}{cosine}{gain}{r['snr']:>8.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
