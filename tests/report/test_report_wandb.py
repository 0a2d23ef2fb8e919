"""`python -m pilaf_exp.report DIR --wandb --workspace`, offline: one W&B run of job type `report` in
the sweep's group holding the very rows of the report's table files, its figures and an artifact
of the table files; the workspace view's spec written beside them."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import wandb

from pilaf_exp.infra.wandb_records import offline_runs
from pilaf_exp.report.__main__ import main

GROUP = "table3_online-2025-06-01_12-00-00"


def finished_run(run_dir, sampler: str, seed: int, slope: float) -> None:
    """What a finished run of the sweep leaves for the report: summary, evaluations, its W&B group."""
    run_dir.mkdir(parents=True)
    steps = [0, 10, 20]
    history = pd.DataFrame({"step": steps, "annotations/total": [16.0 * step for step in steps]})
    history["eval/J"] = 0.1 + slope * history["step"] / 20
    history["eval/reward"], history["eval/kl"], history["eval/J_stderr"] = history["eval/J"] + 0.5, 5.0, 0.01
    history.to_csv(run_dir / "eval_history.csv", index=False)
    final = history.iloc[-1]
    summary = {
        "algo": "online",
        "experiment": "table3_online",
        "sampler": sampler,
        "seed": seed,
        "steps": 20,
        "eval/J": final["eval/J"],
        "eval/reward": final["eval/reward"],
        "eval/kl": 5.0,
        "sft/J": 0.1,
        "sft/reward": 0.6,
        "sft/kl": 0.0,
        "optimum/J_star": 2.1,
        "optimum/J_ref": 0.1,
        "annotations/total": 320.0,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "config_resolved.yaml").write_text("logger:\n  wandb:\n    project: pilaf_tables\n")
    (run_dir / "wandb").mkdir()
    (run_dir / "wandb" / "group").write_text(GROUP + "\n")


def test_the_report_goes_to_one_wandb_run_of_the_sweeps_group(tmp_path, offline, capsys):
    sweep = tmp_path / "sweep"
    for sampler, slopes in {"vanilla": [1.0, 1.2], "pilaf": [1.3, 1.6]}.items():
        for seed, slope in enumerate(slopes):
            finished_run(sweep / f"{sampler}_{seed}", sampler, seed, slope)
    main([str(sweep), "--wandb", "--workspace"])
    said = capsys.readouterr().out
    assert "wandb sync" in said and "wandb_workspace.json" in said
    wandb.teardown()  # the offline files are complete once W&B's service has stopped (as at process exit)

    (report,) = offline_runs(sweep / "report" / "wandb")
    assert (report.group, report.job_type, report.project) == (GROUP, "report", "pilaf_tables")
    (row,) = report.history
    logged = json.loads((report.files / row["tables/table3_online_table"]["path"]).read_text())
    table = pd.read_csv(sweep / "report" / "table3_online_table.csv")  # the same numbers, row by row
    pd.testing.assert_frame_equal(pd.DataFrame(logged["data"], columns=logged["columns"]), table, check_dtype=False)
    for figure in ("table3_online_reward_kl", "table3_online_J_vs_annotations"):
        assert row[f"figures/{figure}"]["_type"] == "image-file"
        assert (report.files / row[f"figures/{figure}"]["path"]).read_bytes()[:4] == b"\x89PNG"
    (artifact,) = [a for a in report.artifacts if a["type"] == "report"]
    assert {"table3_online_table.csv", "table3_online_table.md", "table3_online_table.tex"} <= set(artifact["files"])

    spec = json.loads((sweep / "report" / "wandb_workspace.json").read_text())
    section = spec["spec"]["section"]
    names = [s["name"] for s in section["panelBankConfig"]["sections"]]
    assert names[:3] == ["J vs annotations", "reward vs KL", "summary table"]
    (j_panel, *_) = section["panelBankConfig"]["sections"][0]["panels"]
    assert j_panel["config"]["xAxis"] == "annotations/total" and j_panel["config"]["metrics"] == ["eval/J"]
    assert j_panel["config"]["groupBy"] == "sampler.value" and j_panel["config"]["groupArea"] == "minmax"
    assert section["runSets"][0]["filters"]["filters"][0]["value"] == GROUP


def test_the_labelled_pairs_table_decodes_text_where_the_task_has_a_tokenizer():
    import torch

    from pilaf_exp.data.text import pad_left, pad_right
    from pilaf_exp.run_output.wandb_pairs import COLUMNS, LabelledPairsTable
    from pilaf_exp.sampling.pairs import PairBatch
    from tests.hf_fixtures import policy_tokenizer

    tokenizer = policy_tokenizer()
    pad = tokenizer.pad_token_id

    def encode(texts: list[str], left: bool) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        return (pad_left if left else pad_right)(rows, pad)

    prompts, answers_a, answers_b = ["Human: hi there", "Human: how are you"], ["Hello!", "Fine"], ["Go away", "Bad"]
    pairs = PairBatch(
        *encode(prompts, left=True),
        *encode(answers_a, False),
        *encode(answers_b, False),
        torch.tensor([0, 2]),
        torch.tensor([0, 3]),
    )
    table = LabelledPairsTable(logger=None, tokenizer=tokenizer, rows=2).table(
        7, pairs, torch.tensor([True, False]), torch.tensor([1.5, 0.2]), torch.tensor([-1.0, 0.9])
    )
    assert table.columns == COLUMNS
    assert table.data == [
        [7, "Human: hi there", "Hello!", "Go away", "policy", "policy", 1.5, -1.0, "a"],
        [7, "Human: how are you", "Fine", "Bad", "plus", "minus", pytest.approx(0.2), pytest.approx(0.9), "b"],
    ]
