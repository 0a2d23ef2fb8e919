"""Kept raw runs: packed small (no checkpoints), unpacked to the same files, repacked byte-identically."""

from __future__ import annotations

from pilaf_exp.results.keep import pack, unpack


def test_pack_keeps_what_rebuilds_a_table_and_nothing_heavy(tmp_path):
    sweep = tmp_path / "runs" / "table3_online"
    for job in ("0", "1"):
        run = sweep / job
        (run / "checkpoints").mkdir(parents=True)
        (run / "config_resolved.yaml").write_text(f"seed: {job}\n")
        (run / "summary.json").write_text(f'{{"seed": {job}}}')
        (run / "eval_history.csv").write_text("step,exact/J\n0,0.1\n")
        (run / "checkpoints" / "step_50.ckpt").write_bytes(b"x" * 1000)
    (sweep / "done").write_text("{}")
    archive = pack(sweep, tmp_path / "kept")
    first = archive.read_bytes()
    assert pack(sweep, tmp_path / "kept").read_bytes() == first  # no time stamp or owner inside
    restored = unpack(tmp_path / "kept", tmp_path / "back")
    assert restored == [tmp_path / "back" / "table3_online"]
    files = sorted(p.relative_to(restored[0]).as_posix() for p in restored[0].rglob("*") if p.is_file())
    assert files == [
        "0/config_resolved.yaml",
        "0/eval_history.csv",
        "0/summary.json",
        "1/config_resolved.yaml",
        "1/eval_history.csv",
        "1/summary.json",
        "done",
    ]
    assert (restored[0] / "1" / "summary.json").read_text() == '{"seed": 1}'
