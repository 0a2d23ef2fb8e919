"""`make gpu-check`'s CPU rehearsal: the script runs end to end at tiny shapes and writes its JSON and
markdown with a number in every cell (the GPU run itself needs a GPU: README, "The GPU check")."""

from __future__ import annotations

import json
import math

import pytest

from pilaf_exp.bench.gpu_check import main


@pytest.mark.slow
def test_the_gpu_check_rehearses_on_cpu_at_tiny_shapes(tmp_path):
    tiny = ["--device", "cpu", "--tiny", "--steps", "1", "--batch", "2", "--prompt-length", "4", "--new-tokens", "4"]
    main([str(tmp_path), *tiny])
    record = json.loads((tmp_path / "gpu_check.json").read_text())
    assert set(record["results"]) == {"tiny-llama", "tiny-qwen2"}
    for shape in record["results"].values():
        assert set(shape["samplers"]) == {"best_of_n", "hybrid", "pilaf", "vanilla"}
        rates = [s["pairs_per_s"] for s in shape["samplers"].values()] + list(shape["decode_tokens_per_s"].values())
        assert all(r > 0 and math.isfinite(r) for r in rates)
        assert all(math.isfinite(loss) for s in shape["samplers"].values() for loss in s["losses"])
        # The lean engine and the models' own forward agree on the mixture's logits (bf16 rounding).
        exact = shape["interpolated_bf16"]
        assert exact["first_step_max_logit_diff"] <= 0.05 * exact["first_step_logit_scale"]
        assert shape["peak_memory_gb"] is None and shape["readme_estimate_gb"] > 0
    table = (tmp_path / "gpu_check.md").read_text()
    assert table.count("| tiny-llama |") == 5 and "README estimate GB" in table
