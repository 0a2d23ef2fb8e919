"""The run's vocabulary, defined once: what a run logs and writes (the metric keys of the loggers,
eval_history.csv and summary.json) and the phases its stopwatch times (timing.json). Everything that
writes or reads one of these names imports it from here; the sampler order is `infra.cli.sampler_order`.

A metric key is `<source>/<metric>`: the source says how it was measured (sampled on the test prompts,
exact by enumerating every response, or the SFT policy's sampled values), the metric what."""

from __future__ import annotations

# The three numbers every evaluation reports, in the order tables print them.
REWARD, KL, J = "reward", "kl", "J"
OBJECTIVE = (REWARD, KL, J)
SAMPLED, EXACT, SFT = "eval", "exact", "sft"  # sources: sampled evaluation, exact evaluation, the SFT policy


def metric_key(source: str, metric: str) -> str:
    """'eval' + 'J' -> 'eval/J'."""
    return f"{source}/{metric}"


# Evaluation: sampled on the test prompts (every evaluation), exact where the task is enumerable.
EVAL_REWARD, EVAL_KL, EVAL_J = (metric_key(SAMPLED, m) for m in OBJECTIVE)
EVAL_J_STDERR = "eval/J_stderr"  # the standard error of the sampled J over test prompts
EXACT_REWARD, EXACT_KL, EXACT_J = (metric_key(EXACT, m) for m in OBJECTIVE)
EXACT_GAIN = "exact/gain"  # (J - J(pi_ref)) / (J* - J(pi_ref)): the share of the achievable gain
SFT_REWARD, SFT_KL, SFT_J = (metric_key(SFT, m) for m in OBJECTIVE)  # summary.json: the step-0 evaluation
SFT_LOSS = "sft/loss"  # the SFT stage's training loss

# The exact optimum on the exact evaluation's prompts (summary.json, logged at step 0).
OPTIMUM_J_STAR, OPTIMUM_J_REF, OPTIMUM_PROMPTS = "optimum/J_star", "optimum/J_ref", "optimum/prompts"
OPTIMUM_GAIN_SHARE = "optimum/gain_share"  # W&B summary: the sampled J's share of J* - J(pi_ref)

# Training, logged every step.
TRAIN_LOSS, TRAIN_REWARD_MARGIN = "train/loss", "train/reward_margin"
TRAIN_ACCURACY, TRAIN_GRAD_NORM = "train/accuracy", "train/grad_norm"

# Costs: responses labelled (2 per pair; the x axis of every efficiency figure) and decoding passes.
ANNOTATIONS = "annotations/total"
FORWARD_PASSES, SELECTION_PASSES = "sampling/forward_passes_per_pair", "sampling/selection_passes_per_pair"

GLOBAL_STEP = "trainer/global_step"  # Lightning's step, in every W&B row
LABELLED_PAIRS = "pairs/labelled"  # the W&B table of a few labelled pairs
FIGURE, FINAL_TABLE = "outputs/reward_kl", "outputs/final_table"  # a finished run's W&B media
TIMING = "timing"  # W&B summary: timing.json's values under timing/<phase>

# The stopwatch's phases (`infra.timing.Stopwatch` keys).
SAMPLING, LABELLING, LEDGER = "sampling", "labelling", "ledger"
EVALUATION, OPTIMUM, FIT = "evaluation", "optimum", "fit"
IN_FIT = (SAMPLING, LABELLING, LEDGER, EVALUATION)  # timed inside the fit
# timing.json's phases: the timed ones, 'training' = the fit less what was timed inside it, 'setup' =
# the wall time before the fit less the optimum (SFT cache, oracle calibration); they sum to the total.
SETUP, TRAINING, TOTAL = "setup", "training", "total"
PHASES = (SETUP, OPTIMUM, SAMPLING, LABELLING, LEDGER, TRAINING, EVALUATION)
