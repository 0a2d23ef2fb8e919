"""The policy trains in train mode and samples / is evaluated in eval mode (a policy with dropout
shows it), and the optimizer's settings come from the config (no hidden weight decay)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from pilaf_exp.build import build_parts


class ModeSpy:
    """Wraps a sampler or an evaluator: records the policy's mode when it is called."""

    def __init__(self, inner, seen: list[bool]) -> None:
        self.inner, self.seen = inner, seen

    def sample(self, policy, *args, **kwargs):
        self.seen.append(policy.training)
        return self.inner.sample(policy, *args, **kwargs)

    def __call__(self, policy, *args, **kwargs):
        self.seen.append(policy.training)
        return self.inner(policy, *args, **kwargs)

    def __getattr__(self, name):  # the rest as the wrapped object has it (the evaluator's schedule)
        return getattr(self.inner, name)


@pytest.mark.parametrize("algo", ["online", "iterative"])
def test_train_mode_for_the_loss_eval_mode_for_sampling_and_evaluation(small_cfg, algo):
    cfg = small_cfg(f"algo={algo}", "algo.eval_every=2", *(["algo.steps=4"] if algo == "online" else []))
    parts = build_parts(cfg)
    for module in parts.world.reference.modules():  # the policy (a copy) inherits it: dropout in train mode
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = 0.5
    sampling, evaluation, loss_forwards = [], [], []
    annotator = parts.annotator.with_sampler(ModeSpy(parts.annotator.sampler, sampling))
    parts = replace(parts, annotator=annotator, evaluator=ModeSpy(parts.evaluator, evaluation))
    policy_forward = type(parts.world.reference).forward

    def recording_forward(self, *args, **kwargs):
        if torch.is_grad_enabled() and self is not parts.world.reference:
            loss_forwards.append(self.training)
        return policy_forward(self, *args, **kwargs)

    type(parts.world.reference).forward = recording_forward
    try:
        fitted = parts.fit()
    finally:
        type(parts.world.reference).forward = policy_forward
    assert sampling and not any(sampling)  # every sampling call saw eval mode
    assert evaluation and not any(evaluation)
    assert loss_forwards and all(loss_forwards)  # every gradient-carrying forward saw train mode
    assert fitted.policy.training
    ids = torch.tensor([[1, 2, 3, 0, 1, 2]])
    with torch.no_grad():  # dropout is really there: two train-mode forwards differ, eval-mode ones agree
        first, second = fitted.policy(input_ids=ids).logits, fitted.policy(input_ids=ids).logits
        assert not torch.equal(first, second)
        fitted.policy.eval()
        assert torch.equal(fitted.policy(input_ids=ids).logits, fitted.policy(input_ids=ids).logits)


def test_optimizer_and_weight_decay_come_from_the_config(small_cfg):
    from pilaf_exp.training.module import DPOModule
    from pilaf_exp.training.settings import Training

    parts = build_parts(small_cfg("algo.weight_decay=0.05", "algo.lr=2e-4"))
    algorithm = parts.algorithm
    training = Training(
        algorithm, parts.world.reference, parts.world.reference, parts.annotator, parts.evaluator, parts.context, None
    )
    module = DPOModule(training)
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.param_groups[0]["weight_decay"] == 0.05 and optimizer.param_groups[0]["lr"] == 2e-4
    default = build_parts(small_cfg(out=None)).algorithm
    assert default.weight_decay == 0.0
