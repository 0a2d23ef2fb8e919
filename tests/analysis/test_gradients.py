"""The gradient analysis on a task small enough to brute-force (3 tokens, prompts of 2, responses of 4):
the tree walk against full-sequence forwards, exact grad J against finite differences of exact J, the
closed-form expected DPO gradient against autograd through `dpo_loss`, and the samplers' Monte Carlo
estimates against the closed form within their reported error."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from pilaf_exp.analysis.expected import pair_terms, pair_weights
from pilaf_exp.analysis.measure import Setting, analyse, compare, cosine, draw, gradients, sampler_generator
from pilaf_exp.analysis.theory import SequencePilafSampler
from pilaf_exp.analysis.tree import directional_derivatives, level_logprobs, sum_levels, weighted_gradients
from pilaf_exp.evaluation.exact import ResponseTable, all_sequences, response_rewards
from pilaf_exp.labelling.oracle import RewardOracle
from pilaf_exp.models.builders import seeded_reward_model, tiny_llama
from pilaf_exp.models.logprobs import sequence_logprob
from pilaf_exp.sampling.decoding import DecodeSpec
from pilaf_exp.sampling.pairs import PairBatch
from pilaf_exp.sampling.samplers import HybridSampler, VanillaSampler
from pilaf_exp.training.dpo import dpo_loss

VOCAB, LENGTH, BETA = 3, 4, 0.5
SIZE = VOCAB**LENGTH
PROMPTS = torch.tensor([[2, 0], [1, 1]])


class Float64RMSNorm(torch.nn.Module):
    """LlamaRMSNorm without its float32 round trip, so a float64 model is float64 throughout and
    central differences of it are accurate to ~1e-9."""

    def __init__(self, norm: torch.nn.Module) -> None:
        super().__init__()
        self.weight, self.eps = norm.weight, norm.variance_epsilon

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


def tiny(seed: int) -> torch.nn.Module:
    model = tiny_llama(VOCAB, hidden_size=16, num_layers=1, num_heads=2, seed=seed)
    with torch.no_grad():  # distinct, non-uniform next-token distributions
        model.lm_head.weight.mul_(30)
    for name, module in list(model.named_modules()):
        if type(module).__name__ == "LlamaRMSNorm":
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, Float64RMSNorm(module))
    return model.double().eval()


@pytest.fixture(scope="module")
def world():
    policy, reference = tiny(0).requires_grad_(True), tiny(1).requires_grad_(False)
    oracle = RewardOracle(seeded_reward_model(VOCAB, hidden_size=16, num_layers=1, num_heads=2, seed=2), VOCAB).eval()
    oracle.scale.fill_(0.3)
    with torch.no_grad():
        reference_logp = torch.stack([full_logprobs(reference, x) for x in PROMPTS])
    reward = torch.stack([response_rewards(oracle, x, VOCAB, LENGTH) for x in PROMPTS])
    return policy, reference, ResponseTable(PROMPTS, reference_logp, reward, VOCAB, LENGTH, 1.0)


def full_logprobs(model, prompt) -> torch.Tensor:
    """log pi(y|x) of every response by full-sequence forwards, in the model's precision: [SIZE]."""
    responses = all_sequences(VOCAB, LENGTH)
    inputs = torch.cat([prompt[None].expand(SIZE, -1), responses], dim=1)
    logits = model(input_ids=inputs).logits[:, len(prompt) - 1 : -1]
    return torch.log_softmax(logits, -1).gather(-1, responses[..., None]).squeeze(-1).sum(-1)


def test_full_logprobs_are_the_training_codes():
    model, prompt, responses = tiny(3).float(), PROMPTS[0], all_sequences(VOCAB, LENGTH)
    x = prompt[None].expand(SIZE, -1)
    expected = sequence_logprob(model, x, torch.ones_like(x), responses, torch.ones_like(responses))
    torch.testing.assert_close(full_logprobs(model, prompt), expected)


def exact_j(policy, reference, table) -> torch.Tensor:
    """J = mean_x sum_y pi (r - beta (log pi - log pi_ref)), from full-sequence forwards."""
    values = []
    for i, prompt in enumerate(table.prompts):
        logp = full_logprobs(policy, prompt)
        values.append((logp.exp() * (table.reward[i].double() - BETA * (logp - table.reference_logp[i]))).sum())
    return torch.stack(values).mean()


def flat_grad(value, model) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, list(model.parameters()), retain_graph=True)])


def with_offset(model, direction: torch.Tensor):
    twin = copy.deepcopy(model)
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(torch.nn.utils.parameters_to_vector(twin.parameters()) + direction,
                                            twin.parameters())  # fmt: skip
    return twin


def test_tree_walk_matches_full_sequences(world):
    policy, _, _ = world
    weights = torch.randn(SIZE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for prompt in PROMPTS:
        full = full_logprobs(policy, prompt)
        torch.testing.assert_close(sum_levels(level_logprobs(policy, prompt, VOCAB, LENGTH)), full)
        [tree] = weighted_gradients(policy, prompt, [weights], VOCAB, LENGTH)
        torch.testing.assert_close(tree, flat_grad((weights * full).sum(), policy), rtol=1e-10, atol=1e-12)


def test_exact_grad_j_matches_finite_differences_of_exact_j(world):
    policy, reference, table = world
    logp = torch.stack([full_logprobs(policy, x).detach() for x in PROMPTS])
    grad_j, _ = gradients(policy, table, logp, {}, BETA)
    torch.testing.assert_close(grad_j, flat_grad(exact_j(policy, reference, table), policy))  # autograd of J
    generator = torch.Generator().manual_seed(1)
    directions = [torch.randn(len(grad_j), generator=generator, dtype=torch.float64) for _ in range(2)]
    directions = [v / v.norm() for v in directions]
    directions += [torch.eye(len(grad_j), dtype=torch.float64)[k] for k in (0, len(grad_j) // 2, len(grad_j) - 1)]
    step = 1e-6
    for v in directions:
        with torch.no_grad():
            plus, minus = (exact_j(with_offset(policy, s * step * v), reference, table) for s in (1, -1))
        difference = float(plus - minus) / (2 * step)
        assert difference == pytest.approx(float(grad_j @ v), rel=1e-7, abs=1e-9)
    assert grad_j.norm() > 1e-3  # the test has something to check


def test_directional_derivatives_match_autograd(world):
    policy, _, _ = world
    direction = torch.randn(sum(p.numel() for p in policy.parameters()), generator=torch.Generator().manual_seed(2))
    along = directional_derivatives(policy, PROMPTS, direction.double(), VOCAB, LENGTH)
    unit = direction.double() / direction.norm()
    for i, prompt in enumerate(PROMPTS):
        full = full_logprobs(policy, prompt)
        for y in (0, 17, SIZE - 1):
            assert float(along[i, y]) == pytest.approx(float(flat_grad(full[y], policy) @ unit), rel=1e-6, abs=1e-8)


def pair_distribution(kind: str, logp: torch.Tensor, reference_logp: torch.Tensor) -> torch.Tensor:
    """[SIZE * SIZE] P(a, b) (row a * SIZE + b) of vanilla (pi x pi), hybrid (pi x pi_ref) or T-PILAF
    (1/2 pi x pi + 1/2 pi_plus x pi_minus, sequence-level interpolation with coef = BETA)."""
    product = lambda la, lb: (la[:, None] + lb[None, :]).exp().flatten()  # noqa: E731
    if kind == "t_pilaf":
        plus = torch.log_softmax((1 + BETA) * logp - BETA * reference_logp, 0)  # pi^(1+c) pi_ref^(-c), normalised
        minus = torch.log_softmax((1 - BETA) * logp + BETA * reference_logp, 0)
        return 0.5 * product(logp, logp) + 0.5 * product(plus, minus)
    return product(logp, logp if kind == "vanilla" else reference_logp)


def all_pairs(kind: str, logp: torch.Tensor, reference_logp: torch.Tensor):
    """Every (a, b): rows of a, rows of b, P(a, b)."""
    a, b = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    return a.flatten(), b.flatten(), pair_distribution(kind, logp.double(), reference_logp.double())


def closed_form_independent(policy, reference, table, kind: str) -> torch.Tensor:
    """Autograd of sum_(a,b) P(a,b) [s L(a>b) + (1-s) L(b>a)] with `dpo_loss`, over every pair."""
    total = 0.0
    for i, prompt in enumerate(table.prompts):
        logp = full_logprobs(policy, prompt)
        a, b, prob = all_pairs(kind, logp.detach(), table.reference_logp[i])
        ref, reward = table.reference_logp[i], table.reward[i].double()
        s = torch.sigmoid(reward[a] - reward[b])
        mean_loss, margin = dpo_loss(logp[a], logp[b], ref[a], ref[b], BETA)  # a chosen, b rejected
        a_chosen, b_chosen = -torch.nn.functional.logsigmoid(margin), -torch.nn.functional.logsigmoid(-margin)
        torch.testing.assert_close(a_chosen.mean(), mean_loss)  # the per-pair losses dpo_loss averages
        torch.testing.assert_close(b_chosen.mean(), dpo_loss(logp[b], logp[a], ref[b], ref[a], BETA)[0])
        loss = s * a_chosen + (1 - s) * b_chosen
        total = total + (prob * loss).sum() / len(table.prompts)
    return flat_grad(total, policy)


def closed_form(policy, table, kind: str) -> torch.Tensor:
    """The analysis's exact expected DPO gradient for a pair distribution (`pair_distribution`)."""
    total = torch.zeros(sum(p.numel() for p in policy.parameters()), dtype=torch.float64)
    for i, prompt in enumerate(table.prompts):
        logp = full_logprobs(policy, prompt).detach()
        a, b, prob = all_pairs(kind, logp, table.reference_logp[i])
        terms = pair_terms(a, b, logp, table.reference_logp[i], table.reward[i], BETA)
        [g] = weighted_gradients(policy, prompt, [pair_weights(terms, SIZE, prob) / len(PROMPTS)], VOCAB, LENGTH)
        total += g
    return total


@pytest.fixture(scope="module")
def closed(world) -> dict[str, torch.Tensor]:
    """The analysis's closed form for vanilla, hybrid and T-PILAF."""
    return {kind: closed_form(world[0], world[2], kind) for kind in ("vanilla", "hybrid", "t_pilaf")}


@pytest.mark.parametrize("kind", ["vanilla", "hybrid"])
def test_closed_form_expected_dpo_gradient_matches_autograd_through_dpo_loss(world, closed, kind):
    policy, reference, table = world
    expected = closed_form_independent(policy, reference, table, kind)
    torch.testing.assert_close(closed[kind], expected, rtol=1e-8, atol=1e-11)
    assert expected.norm() > 1e-3


SPEC = DecodeSpec(max_new_tokens=LENGTH)


def monte_carlo(world, sampler, pairs: int):
    """The analysis's two-halves estimate from the sampler's own pairs: (grad J, [g1, g2], terms)."""
    policy, reference, table = world
    logp = torch.stack([full_logprobs(policy, x).detach() for x in PROMPTS])
    setting = Setting(beta=BETA, lr=1.0, batch_size=8, pairs=pairs)
    generator = sampler_generator(0, type(sampler).__name__)
    halves = [draw(sampler, policy, reference, table, logp, SPEC, setting, generator) for _ in range(2)]
    grad_j, dpo = gradients(policy, table, logp, {"s": halves}, BETA)
    return grad_j, dpo["s"], halves


SAMPLERS = [(VanillaSampler(), "vanilla", "hybrid"), (HybridSampler(), "hybrid", "vanilla"),
            (SequencePilafSampler(coef=BETA), "t_pilaf", "vanilla")]  # fmt: skip


@pytest.mark.parametrize("sampler, kind, other", SAMPLERS, ids=[k for _, k, _ in SAMPLERS])
def test_monte_carlo_estimate_agrees_with_the_closed_form_within_its_error(world, closed, sampler, kind, other):
    """The sampler's own pairs estimate the closed form: along grad J and along random directions the
    Monte Carlo projection is within 4 of its per-pair standard errors of the closed form, and far
    from the other sampler's closed form (the check has power)."""
    policy, _, table = world
    exact, wrong = closed[kind], closed[other]
    setting = Setting(beta=BETA, lr=1.0, batch_size=8, pairs=2000)
    grad_j, halves, terms = monte_carlo(world, sampler, setting.pairs)
    generator = torch.Generator().manual_seed(3)
    directions = [grad_j] + [torch.randn(len(grad_j), generator=generator, dtype=torch.float64) for _ in range(2)]
    z_right, z_wrong = [], []
    for direction in directions:
        along = directional_derivatives(policy, PROMPTS, direction, VOCAB, LENGTH)
        result = compare(direction, halves, terms, along, setting)
        unit = direction / direction.norm()
        z_right.append((result["projection"] - float(-exact @ unit)) / result["projection_se"])
        z_wrong.append((result["projection"] - float(-wrong @ unit)) / result["projection_se"])
        # The per-pair projections (forward-mode derivatives) and the gradient vectors agree.
        assert abs(result["projection_check"]) < 1e-5 * abs(result["projection"]) + 1e-9
    assert max(map(abs, z_right)) < 4, z_right
    assert max(map(abs, z_wrong)) > 10, z_wrong
    # The cosine: its Monte Carlo error is small against the difference between the two samplers.
    pooled = -(halves[0] + halves[1]) / 2
    gap = abs(cosine(-exact, grad_j) - cosine(-wrong, grad_j))
    assert abs(cosine(pooled, grad_j) - cosine(-exact, grad_j)) < gap / 5


def label_projections(terms, along) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pair, the negative loss gradient along the unit direction when a wins and when b wins."""
    d = along[terms.index_a] - along[terms.index_b]
    return BETA * torch.sigmoid(-terms.margin) * d, -BETA * torch.sigmoid(terms.margin) * d


def test_signal_to_noise_matches_simulated_batches_with_sampled_labels(world):
    policy, _, table = world
    setting = Setting(beta=BETA, lr=1.0, batch_size=8, pairs=500)
    grad_j, halves, terms = monte_carlo(world, VanillaSampler(), setting.pairs)
    along = directional_derivatives(policy, PROMPTS, grad_j, VOCAB, LENGTH)
    unit = grad_j / grad_j.norm()
    # Each label's projection against autograd through dpo_loss on full-sequence log-probs.
    prompt, t = PROMPTS[0], terms[0][0]
    logp, ref = full_logprobs(policy, prompt), table.reference_logp[0]
    a_wins, b_wins = label_projections(t, along[0])
    for k in (0, 1, 2):
        a, b = t.index_a[k], t.index_b[k]
        for (chosen, rejected), expected in (((a, b), a_wins[k]), ((b, a), b_wins[k])):
            loss = dpo_loss(logp[chosen][None], logp[rejected][None], ref[chosen][None], ref[rejected][None], BETA)[0]
            assert float(-flat_grad(loss, policy) @ unit) == pytest.approx(float(expected), rel=1e-5, abs=1e-9)
    # Batches of `batch_size` pairs from the pool (every prompt equally often), labels drawn from Bradley-Terry.
    pool = [label_projections(t, along[i]) + (t.a_wins,) for half in terms for i, t in enumerate(half)]
    a_value, b_value, s = (torch.cat([p[j] for p in pool]) for j in range(3))
    generator = torch.Generator().manual_seed(4)
    picks = torch.randint(len(s), (40_000, setting.batch_size), generator=generator)
    a_won = torch.rand(picks.shape, generator=generator, dtype=torch.float64) < s[picks]
    batches = torch.where(a_won, a_value[picks], b_value[picks]).mean(-1)
    result = compare(grad_j, halves, terms, along, setting)
    assert result["snr"] == pytest.approx(float(batches.mean() / batches.std()), rel=0.03)
    assert result["projection"] == pytest.approx(float(batches.mean()), rel=0.05)
    assert result["snr"] < result["snr_expected_label"]  # label noise only adds variance


class FixedPairSampler:
    """Always the same pair (responses 5 and 40): its expected gradient is known without sampling."""

    def sample(self, policy, reference, prompt_ids, prompt_mask, spec, generator) -> PairBatch:
        rows, responses = len(prompt_ids), all_sequences(VOCAB, LENGTH)
        a, b = responses[5].expand(rows, -1), responses[40].expand(rows, -1)
        zeros = torch.zeros(rows, dtype=torch.long)
        return PairBatch(prompt_ids, prompt_mask, a, torch.ones_like(a), b, torch.ones_like(b), zeros, zeros)


def test_analyse_reports_exact_values_for_a_known_pair_distribution(world, closed):
    policy, reference, table = world
    setting = Setting(beta=BETA, lr=0.01, batch_size=8, pairs=64)
    out = analyse(policy, reference, table, {"fixed": FixedPairSampler(), "vanilla": VanillaSampler()}, SPEC,
                  setting, seed=0)  # fmt: skip
    j = exact_j(policy, reference, table)
    grad_j = flat_grad(j, policy)
    assert out["objective"]["J"] == pytest.approx(float(j.detach()), rel=1e-9)
    assert out["grad_J_norm"] == pytest.approx(float(grad_j.norm()), rel=1e-8)
    loss = 0.0
    for i, prompt in enumerate(PROMPTS):  # expected DPO loss of the pair (5, 40), Bradley-Terry label
        logp, ref, r = full_logprobs(policy, prompt), table.reference_logp[i], table.reward[i].double()
        s = torch.sigmoid(r[5] - r[40])
        a_first = dpo_loss(logp[5][None], logp[40][None], ref[5][None], ref[40][None], BETA)[0]
        b_first = dpo_loss(logp[40][None], logp[5][None], ref[40][None], ref[5][None], BETA)[0]
        loss = loss + (s * a_first + (1 - s) * b_first) / len(PROMPTS)
    descent = -flat_grad(loss, policy)
    fixed = out["samplers"]["fixed"]
    assert fixed["cosine"] == pytest.approx(cosine(descent, grad_j), rel=1e-7)
    assert fixed["cosine_mc_error"] < 1e-9 and abs(fixed["noise_share"]) < 1e-9  # no sampling noise
    assert fixed["gain_per_annotation"] == pytest.approx(0.01 * float(descent @ grad_j) / 2, rel=1e-6)
    assert fixed["pairs"] == 2 * 64 * len(PROMPTS)
    vanilla = out["samplers"]["vanilla"]
    assert abs(vanilla["cosine"] - cosine(-closed["vanilla"], grad_j)) < 0.05
    assert 0 < vanilla["noise_share"] < 0.5 and vanilla["cosine_mc_error"] > 0


TINY_WORLD = [
    "task.vocab_size=3", "task.prompt_length=2", "task.response_length=3", "task.num_test_prompts=4",
    "model.policy.hidden_size=16", "model.policy.num_layers=1", "model.policy.num_heads=2", "model.sft.steps=4",
    "oracle.model.hidden_size=16", "oracle.model.num_layers=1", "oracle.model.num_heads=2",
    "oracle.calibration_prompts=32", "eval.exact_prompts=2", "algo.batch_size=4",
]  # fmt: skip


def fake_run(tmp_path, overrides: list[str], step: int) -> Path:
    """A run directory as `python -m pilaf_exp` leaves it: its resolved config and a Lightning checkpoint
    whose state_dict holds the policy under `policy.` (here the reference, nudged)."""
    from omegaconf import OmegaConf

    from pilaf_exp.build import build_world
    from pilaf_exp.infra.cli import compose_config

    cfg = compose_config(*overrides)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    policy = copy.deepcopy(build_world(cfg).reference)
    with torch.no_grad():
        policy.lm_head.weight.add_(torch.randn_like(policy.lm_head.weight, generator=torch.Generator().manual_seed(0)))
    state = {f"policy.{k}": v for k, v in policy.state_dict().items()}
    path = run / "checkpoints" / f"step_{step:08d}.ckpt"
    torch.save({"state_dict": state, "pilaf": {"run_step": step}}, path)
    return path


def test_command_line_analyses_a_run_checkpoint_and_the_report_writes_table_figure_and_text(tmp_path, sft_cache):
    from pilaf_exp.analysis import gradients, gradients_report

    overrides = [*TINY_WORLD, f"cache_dir={sft_cache}", "seed=3"]
    checkpoint = fake_run(tmp_path, overrides, step=7)
    out = tmp_path / "results"
    samplers = ["--samplers", "vanilla,hybrid", "--variant", "pilaf:sampler.coef=0.3"]
    gradients.main([*overrides, "--pairs", "64", *samplers, "--checkpoint", str(checkpoint), "--checkpoint", "sft",
                    "--out", str(out)])  # fmt: skip
    trained, sft = (
        json.loads((out / "run_step7_seed3.json").read_text()),
        json.loads((out / "sft_seed3.json").read_text()),
    )
    assert trained["step"] == 7 and trained["run_seed"] == 3 and sft["step"] == 0
    assert list(trained["samplers"]) == ["vanilla", "hybrid", "pilaf[coef=0.3]"]
    pilaf = {"_target_": "pilaf_exp.sampling.samplers.PilafSampler", "coef": 0.3, "interpolated_fraction": 0.5}
    assert trained["sampler_configs"]["pilaf[coef=0.3]"] == pilaf
    assert trained["objective"]["kl"] > 0 and sft["objective"]["kl"] == pytest.approx(0, abs=1e-6)
    for result in trained["samplers"].values():
        assert -1 <= result["cosine"] <= 1 and result["pairs"] == 2 * 64 * 2
    written = gradients_report.write(out, tmp_path / "docs")
    assert all(path.exists() for path in written)
    text = (tmp_path / "docs" / "gradients.md").read_text()
    assert "| 7 | pilaf[coef=0.3] | 1 |" in text and "## Does it agree?" in text and "gradients/gradients.png" in text


def test_a_checkpoint_from_another_world_is_refused(tmp_path, sft_cache):
    from pilaf_exp.analysis import gradients

    checkpoint = fake_run(tmp_path, [*TINY_WORLD, f"cache_dir={sft_cache}"], step=1)
    with pytest.raises(SystemExit) as stop:
        gradients.main(
            [*TINY_WORLD, f"cache_dir={sft_cache}", "oracle.target_std=1.0", "--checkpoint", str(checkpoint)]
        )
    assert stop.value.code == 2


def summary_of(cosines: dict[str, list[float]]):
    """The report's summary of synthetic results: step 100, one value per seed."""
    from pilaf_exp.analysis.gradients_report import summarise

    rows = [
        {"step": 100, "seed": seed, "sampler": name, "cosine": value, "gain_per_annotation": value, "snr": value,
         "cosine_mc_error": 0.0, "noise_share": 0.0}
        for name, values in cosines.items() for seed, value in enumerate(values)
    ]  # fmt: skip
    return summarise(pd.DataFrame(rows))


def test_the_verdict_follows_the_paired_interval():
    from pilaf_exp.analysis.gradients_text import claim_verdict

    better = summary_of({"vanilla": [0.90, 0.91, 0.92, 0.90], "pilaf": [0.95, 0.95, 0.97, 0.96]})
    tie = summary_of({"vanilla": [0.90, 0.91, 0.92, 0.90], "pilaf": [0.95, 0.86, 0.97, 0.88]})
    worse = summary_of({"vanilla": [0.90, 0.91, 0.92, 0.90], "pilaf": [0.80, 0.81, 0.83, 0.80]})
    assert claim_verdict(better, "cosine", [100]).startswith("**agrees**")
    assert claim_verdict(tie, "cosine", [100]).startswith("**not resolved**")
    assert claim_verdict(worse, "cosine", [100]).startswith("**disagrees**")
