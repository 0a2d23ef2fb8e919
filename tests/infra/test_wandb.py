"""The W&B record of a run, read back from the offline run directory with W&B's own protobuf records
(what `wandb sync` uploads): config, axes, summary and media of one run; one group per sweep with
configs that differ only where the overrides do; one run with one history across a kill and resume."""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pandas as pd
import pytest
import wandb

from pilaf_exp.infra import wandb_run
from pilaf_exp.infra.cli import compose_config
from pilaf_exp.infra.wandb_records import items, offline_runs, records
from pilaf_exp.run_output.run_files import save_config
from pilaf_exp.sampling.decoding import SOURCES

# test_optimum's enumerable task (its SFT reference and exact table are cached once per session).
TINY_TASK = ["task.vocab_size=4", "task.response_length=4", "task.num_test_prompts=16", "eval.exact_prompts=16"]
SHRINK = [
    "algo.steps=4",
    "algo.batch_size=8",
    "algo.eval_every=2",
    "eval.exact_prompts=0",
    "task.num_test_prompts=32",
    "oracle.calibration_prompts=256",
    "trainer.enable_progress_bar=false",
]


def written(wandb_dir: Path) -> list:
    """The offline runs under `wandb_dir` once W&B has written them out: `finish()` returns before its
    service has flushed the transaction log, which is complete when the process ends (a user's
    tooling reads it then) or, in this process, after `wandb.teardown()`."""
    wandb.teardown()
    return offline_runs(wandb_dir)


def media(run, key: str, row: dict) -> Path:
    """The file of a logged table or image, in the offline run's files/."""
    return run.files / row[key]["path"]


def test_a_run_logs_its_config_axes_summary_and_media(small_cfg, tmp_path, offline):
    from pilaf_exp.run import run

    summary = run(small_cfg(*TINY_TASK, "logger=default", "algo.steps=6", "algo.batch_size=8", "algo.eval_every=3"))
    (logged,) = written(tmp_path / "run" / "wandb")
    config = logged.config
    assert (config["sampler"], config["algo"], config["seed"], config["algo.beta"]) == ("vanilla", "online", 0, 0.1)
    assert [config[key] for key in ("model", "task", "oracle", "trainer")] == ["tiny", "embedded", "embedded", "cpu"]
    assert config["task.vocab_size"] == 4 and config["model.policy._target_"].startswith("pilaf_exp.models")
    # The tiny models are built, not loaded: their builders stand where a checkpoint's path would
    # (model.policy.path and oracle.model.path for the paper's models: the test of the checkpoints' names).
    assert config["oracle.model._target_"].startswith("pilaf_exp.models")
    assert (logged.name, logged.job_type, logged.group) == ("vanilla-s0", "online", "")  # a single run: no group
    assert logged.id == (tmp_path / "run" / "wandb" / "run_id").read_text().strip()

    # eval/* against the annotations, eval/J's summary its last and max; every evaluation in the history.
    assert logged.metrics["eval/*"]["step_metric"] == "annotations/total"
    assert sorted(logged.metrics["eval/J"]["summary"]) == ["last", "max"]
    evaluations = [row for row in logged.history if "eval/J" in row]
    assert [row["trainer/global_step"] for row in evaluations] == [0, 3, 6]
    assert [row["annotations/total"] for row in evaluations] == [0, 48, 96]
    assert logged.summary["eval/J"]["last"] == pytest.approx(summary["eval/J"])
    assert logged.summary["eval/J"]["max"] == pytest.approx(max(row["eval/J"] for row in evaluations))
    for key in ("optimum/J_star", "optimum/J_ref", "sft/J"):
        assert logged.summary[key] == pytest.approx(summary[key])
    gain = (summary["eval/J"] - summary["sft/J"]) / (summary["optimum/J_star"] - summary["optimum/J_ref"])
    assert logged.summary["optimum/gain_share"] == pytest.approx(gain)
    timing = json.loads((tmp_path / "run" / "timing.json").read_text())
    assert {f"timing/{k}" for k in timing} <= set(logged.summary)

    # The run's figure and final table, at the last step.
    (end,) = [row for row in logged.history if "outputs/final_table" in row]
    assert end["trainer/global_step"] == 6 and end["outputs/reward_kl"]["_type"] == "image-file"
    assert media(logged, "outputs/reward_kl", end).read_bytes()[:4] == b"\x89PNG"
    final = json.loads(media(logged, "outputs/final_table", end).read_text())
    assert final["columns"] == ["policy", "step", "reward", "KL", "J"]
    rows = {row[0]: row[1:] for row in final["data"]}
    assert rows["SFT"] == [0, summary["sft/reward"], summary["sft/kl"], summary["sft/J"]]
    assert rows["final"] == [6, summary["eval/reward"], summary["eval/kl"], summary["eval/J"]]
    assert rows["final (exact)"] == [6, summary["exact/reward"], summary["exact/kl"], summary["exact/J"]]
    assert rows["optimum (exact J*)"][-1] == summary["optimum/J_star"]

    # A few labelled pairs every eval_every steps (the embedded task has no tokenizer: token ids).
    tables = [row for row in logged.history if "pairs/labelled" in row]
    assert [row["trainer/global_step"] for row in tables] == [3, 6]
    pairs = json.loads(media(logged, "pairs/labelled", tables[0]).read_text())
    assert pairs["columns"][:3] == ["step", "prompt", "response_a"] and len(pairs["data"]) == 4
    for step, *texts, source_a, source_b, score_a, score_b, label in pairs["data"]:
        assert step == 3 and all(1 <= len(text.split()) <= 4 for text in texts) and {source_a, source_b} <= set(SOURCES)
        assert label in ("a", "b") and isinstance(score_a, float) and isinstance(score_b, float)


def test_the_config_names_the_model_and_oracle_checkpoints(tmp_path):
    cfg = compose_config(f"output_dir={tmp_path}", "+experiment=paper_small")
    save_config(cfg, tmp_path)
    config = wandb_run.run_config(tmp_path)
    assert config["model.policy.path"] == cfg.model.policy.path == config["model.tokenizer.path"]
    assert config["oracle.model.path"] == cfg.oracle.model.path
    assert [config[key] for key in ("model", "oracle", "task", "trainer")] == ["small", "skywork_8b", "hh_rlhf", "gpu"]
    assert wandb_run.run_config(tmp_path / "elsewhere") == {}


def test_each_sweep_has_its_own_group(monkeypatch):
    monkeypatch.setattr(wandb_run, "sweep_dir", lambda: Path("multirun/table3_online/2025-06-01_12-00-00"))
    assert wandb_run.sweep_group("table3_online", "online") == "table3_online-2025-06-01_12-00-00"
    monkeypatch.setattr(wandb_run, "sweep_dir", lambda: Path("multirun/2025-06-01/12-00-00-123456"))
    assert wandb_run.sweep_group(None, "online") == "online-2025-06-01-12-00-00-123456"
    monkeypatch.setattr(wandb_run, "sweep_dir", lambda: None)  # a single run
    assert wandb_run.sweep_group("table3_online", "online") == "table3_online"
    assert wandb_run.sweep_group(None, "online") is None


def test_the_reader_stops_at_a_torn_record(tmp_path):
    """A killed process can leave half a record at the end of its log: what was written in full is read."""
    log = tmp_path / "run-x.wandb"
    record = wandb.proto.wandb_internal_pb2.Record()
    record.run.run_id = "x"
    data = record.SerializeToString()
    framed = struct.pack("<IHB", zlib.crc32(bytes([1]) + data), len(data), 1) + data
    log.write_bytes(b":W&B" + struct.pack("<HB", 0xBEE1, 0) + framed + framed[: len(framed) - 2])
    assert [r.run.run_id for r in records(log)] == ["x"]


def pilaf_exp(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", *args], env=env, cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_a_sweeps_runs_share_a_group_and_differ_only_where_the_overrides_do(tmp_path, subprocess_env):
    sweep = tmp_path / "sweep"
    pilaf_exp(["pilaf_exp", "-m", "seed=0,1", *SHRINK, f"hydra.sweep.dir={sweep}"], subprocess_env, tmp_path)
    (first,), (second,) = offline_runs(sweep / "0" / "wandb"), offline_runs(sweep / "1" / "wandb")
    assert first.group == second.group == f"online-{tmp_path.name}-sweep"  # the experiment, then the sweep's id
    assert (first.name, second.name) == ("vanilla-s0", "vanilla-s1") and first.id != second.id
    keys = first.config.keys() | second.config.keys()
    differ = {key for key in keys if first.config.get(key) != second.config.get(key)}
    # seed=0,1, and what follows from it: the run's name and tag, and the job's directory (sweep/<job>).
    derived = {"output_dir", "logger.csv.save_dir", "logger.wandb.save_dir", "logger.wandb.name", "logger.wandb.tags"}
    assert differ == {"seed"} | derived

    # The report joins the sweep's group, with the very numbers of its table file.
    pilaf_exp(["pilaf_exp.report", str(sweep), "--wandb"], subprocess_env, tmp_path)
    (report,) = offline_runs(sweep / "report" / "wandb")
    assert (report.group, report.job_type) == (first.group, "report")
    (row,) = [row for row in report.history if "tables/online_table" in row]
    logged = json.loads((report.files / row["tables/online_table"]["path"]).read_text())
    table = pd.read_csv(sweep / "report" / "online_table.csv")
    pd.testing.assert_frame_equal(pd.DataFrame(logged["data"], columns=logged["columns"]), table, check_dtype=False)


RESUMABLE = [
    "sampler=pilaf",
    "algo.steps=12",
    "algo.batch_size=8",
    "algo.micro_batch_size=4",
    "algo.eval_every=3",
    "checkpoint.every_n_steps=4",
    "eval.exact_prompts=0",
    "task.num_test_prompts=32",
    "oracle.calibration_prompts=256",
    "trainer.enable_progress_bar=false",
]


def step_six_written(wandb_dir: Path) -> bool:
    """Whether the first process's offline log holds the evaluation at training step 6."""
    logs = sorted(wandb_dir.glob("offline-run-*/run-*.wandb"))
    if not logs:
        return False
    try:
        rows = [record.history.item for record in records(logs[0]) if record.WhichOneof("record_type") == "history"]
    except (OSError, ValueError):  # not yet past its header
        return False
    return any(row.get("trainer/global_step") == 6 and "eval/J" in row for row in map(items, rows))


@pytest.mark.slow
def test_a_killed_and_resumed_run_is_one_wandb_run_with_one_history(tmp_path, subprocess_env):
    run_dir = tmp_path / "run"
    flush = "logger.wandb.flush_seconds=0.2"
    command = [sys.executable, "-m", "pilaf_exp", f"hydra.run.dir={run_dir}", *RESUMABLE, flush]
    process = subprocess.Popen(command, env=subprocess_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Killed once W&B has written step 6's evaluation (it writes every logger.wandb.flush_seconds):
    # the resumed run replays from step 4's or step 8's checkpoint what the first process logged.
    while not step_six_written(run_dir / "wandb") and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=120)
    resumed = subprocess.run(command, env=subprocess_env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    resumed_from = json.loads((run_dir / "timing.json").read_text())["resumed_from"]
    assert "(step 4)" in resumed_from or "(step 8)" in resumed_from

    parts = offline_runs(run_dir / "wandb")  # one offline directory per process, oldest first
    assert len(parts) == 2 and parts[0].id == parts[1].id
    assert parts[0].config == parts[1].config and parts[0].name == parts[1].name == "pilaf-s0"
    history = parts[0].history + parts[1].history
    assert [row["_step"] for row in history] == list(range(len(history)))  # continued, never restarted
    # Every evaluation once, in order, with the values of the run's own eval_history.csv.
    evaluations = [(row["trainer/global_step"], row["eval/J"]) for row in history if "eval/J" in row]
    expected = pd.read_csv(run_dir / "eval_history.csv")
    assert [step for step, _ in evaluations] == expected["step"].tolist() == [0, 3, 6, 9, 12]
    assert [j for _, j in evaluations] == pytest.approx(expected["eval/J"].tolist())
    assert [row["trainer/global_step"] for row in history if "pairs/labelled" in row] == [3, 6, 9, 12]
