#!/usr/bin/env bash
# `make gradients`: the gradient analysis behind docs/results/gradients.md (RESULTS.md links it).
#   1. five vanilla online-DPO runs (the default config, seeds 0-4, 300 steps, a checkpoint every 100);
#   2. python -m pilaf_exp.analysis.gradients on the SFT policy and each checkpoint (steps 100, 200, 300),
#      analysis seed = the run's seed: every sampler of conf/sampler/, PILAF's coef at 0.05 and 0.2 around
#      beta = 0.1, and T-PILAF (the sequence-level interpolation the theory is stated for; `pilaf` itself
#      interpolates per token);
#   3. the table, figure and text (python -m pilaf_exp.analysis.gradients_report).
# Whatever is already there (a run's summary.json, an analysis's JSON) is kept, not redone.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
RUNS="${RUNS:-results/runs/gradients}"     # the vanilla runs (not committed: 72 MB of checkpoints)
OUT="${OUT:-docs/results/gradients/results}" # the analysis's JSON files (committed)
SEEDS="${SEEDS:-0 1 2 3 4}"
ANALYSIS=(--pairs 4096 --pairs-for best_of_n=1024
          --variant pilaf:sampler.coef=0.05 --variant pilaf:sampler.coef=0.2
          --variant t_pilaf=pilaf:sampler._target_=pilaf_exp.analysis.theory.SequencePilafSampler
          --out "$OUT")

for seed in $SEEDS; do
  run="$RUNS/vanilla_seed$seed"
  [ -f "$run/summary.json" ] || "$PY" -m pilaf_exp algo.steps=300 checkpoint.every_n_steps=100 checkpoint.keep=4 \
      seed="$seed" output_dir="$run" logger=csv eval.exact_prompts=0 trainer.enable_progress_bar=false
done
for seed in $SEEDS; do
  [ -f "$OUT/sft_seed$seed.json" ] || "$PY" -m pilaf_exp.analysis.gradients seed="$seed" eval.exact_prompts=8 \
      --checkpoint sft "${ANALYSIS[@]}"
  for step in 100 200 300; do
    [ -f "$OUT/vanilla_seed${seed}_step${step}_seed$seed.json" ] || "$PY" -m pilaf_exp.analysis.gradients \
        seed="$seed" eval.exact_prompts=8 \
        --checkpoint "$RUNS/vanilla_seed$seed/checkpoints/step_$(printf %08d "$step").ckpt" "${ANALYSIS[@]}"
  done
done
"$PY" -m pilaf_exp.analysis.gradients_report "$OUT" --out docs/results
