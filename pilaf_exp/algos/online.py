"""Online DPO (Guo et al. 2024): every step samples and labels pairs from the current policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from pilaf_exp.checkpointing import restore_rng_states
from pilaf_exp.checks import ConfigError
from pilaf_exp.data import preference_log, prompt_stream
from pilaf_exp.dpo_module import OnlineDPOModule
from pilaf_exp.labelling import Fitted, RunRecord
from pilaf_exp.ledger import Ledger

if TYPE_CHECKING:
    from pilaf_exp.experiment import Experiment


@dataclass
class OnlineDPO:
    beta: float
    steps: int
    batch_size: int  # pairs per step, per rank
    lr: float
    temperature: float
    eval_every: int
    micro_batch_size: int | None = None  # pairs per forward/backward; the rest accumulates
    name: ClassVar[str] = "online"

    def fit(self, exp: Experiment) -> Fitted:
        spec = exp.decode_spec(self.temperature)
        record = RunRecord()
        policy = exp.new_policy()
        micro = self.micro_batch_size or self.batch_size
        checkpointer = exp.checkpointer()
        if not exp.resume and checkpointer.saved():
            raise ConfigError(f"resume=never but {checkpointer.directory} holds checkpoints: choose another output_dir")
        resumed = checkpointer.latest() if exp.resume else None
        start = 0
        if resumed is not None:
            path, checkpoint = resumed
            start = resume_policy_and_record(policy, record, checkpoint)
            record.run_info["resumed_from"] = f"{path} (step {start})"

        def loader(rank: int, world_size: int):  # built once the trainer knows the ranks
            return prompt_stream(exp.task.train, self.batch_size, self.steps, exp.seed, rank, world_size, micro, start)

        def ledger(rank: int) -> Ledger:
            return Ledger(exp.output_dir / "ledger" / f"rank_{rank}")

        module = OnlineDPOModule(
            policy, exp.reference, exp.oracle, exp.evaluator(spec, self.beta), record,
            beta=self.beta, lr=self.lr, eval_every=self.eval_every,
            sampler=exp.sampler, labeler=exp.labeler, spec=spec, seed=exp.seed, make_loader=loader, make_ledger=ledger,
        )  # fmt: skip
        module.checkpointer = checkpointer
        if resumed is not None:
            module.resume_optimizer = resumed[1]["optimizer_states"][0]
        trainer = exp.trainer(
            max_steps=self.steps - start, max_epochs=1, accumulate_grad_batches=self.batch_size // micro,
            use_distributed_sampler=False,  # the prompt stream splits itself across ranks
        )  # fmt: skip
        with record.stopwatch("fit"):
            trainer.fit(module)
        # Every pair of the run, including those labelled before an interruption, from the ledger.
        record.preferences = preference_log(module.ledger)
        record.flush_preferences(exp.output_dir / record.preferences_name())
        return Fitted(policy, record)


def resume_policy_and_record(policy, record: RunRecord, checkpoint: dict) -> int:
    """Load a checkpoint's policy weights, run record and random states; return its step."""
    prefix = "policy."
    policy.load_state_dict({k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)})
    saved = checkpoint["pilaf"]
    for key, value in saved["record"].items():
        setattr(record, key, value)
    record.step_offset = saved["run_step"]
    restore_rng_states(saved["rng"])
    return saved["run_step"]
