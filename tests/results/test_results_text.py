"""RESULTS.md's generated parts: the gradient analysis's verdict (from its own page) and a sweep's time table."""

from __future__ import annotations

from pilaf_exp.results.results_text import gradients_section, regimes_section


def test_the_gradient_section_quotes_the_verdict_of_the_analysis_page(tmp_path):
    page = tmp_path / "gradients.md"
    page.write_text(
        "# Gradients\n\n## Method\n\nwalks.\n\n## Does it agree?\n\n* (i) **disagrees**: x\n\n"
        "### By step\n\nsteps\n\n## Caveats\n\nc\n"
    )
    text = gradients_section(page)
    assert "* (i) **disagrees**: x" in text and "](docs/results/gradients.md)" in text
    assert "walks." not in text and "steps" not in text and "Caveats" not in text


def test_without_the_page_the_section_names_the_command(tmp_path):
    assert "`make gradients`" in gradients_section(tmp_path / "gradients.md")


def test_the_regimes_section_quotes_what_the_map_says(tmp_path):
    page = tmp_path / "regimes.md"
    page.write_text("# Map\n\n## The map\n\n| t |\n\n## What the map says\n\n- **beta1**: tie.\n\n## Quantities\n\nq\n")
    text = regimes_section(page)
    assert "- **beta1**: tie." in text and "](docs/results/regimes.md)" in text
    assert "| t |" not in text and "Quantities" not in text
    assert "`make regimes`" in regimes_section(tmp_path / "absent.md")


def test_the_sweep_time_table_sums_each_phase_per_sampler(tmp_path):
    import json

    from pilaf_exp.report.sweep_time import time_table

    for index, (sampler, evaluation) in enumerate([("vanilla", 60.0), ("vanilla", 120.0), ("pilaf", 30.0)]):
        run = tmp_path / str(index)
        run.mkdir()
        (run / "summary.json").write_text(json.dumps({"sampler": sampler}))
        (run / "timing.json").write_text(
            json.dumps({"evaluation": evaluation, "training": 60.0, "threads": 1, "total": evaluation + 60.0})
        )
    (tmp_path / "done").write_text(json.dumps({"seconds": 300.0}))
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "timing.json").write_text("{}")  # unfinished: no summary.json, not counted
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in time_table(tmp_path).splitlines()[2:5]}
    assert rows["vanilla"][1] == "2" and rows["vanilla"][8] == "3.0" and rows["vanilla"][7] == "2.0"
    assert rows["all"][1] == "3" and rows["all"][9].startswith("6.5")
    assert "wall time: 5.0 min" in time_table(tmp_path)
