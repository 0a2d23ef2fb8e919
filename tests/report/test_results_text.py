"""RESULTS.md's section on the gradient analysis: taken from the analysis's own page, never typed."""

from __future__ import annotations

from pilaf_exp.report.results_text import gradients_section


def test_the_gradient_section_quotes_the_verdict_of_the_analysis_page(tmp_path):
    page = tmp_path / "gradients.md"
    page.write_text("# Gradients\n\n## Method\n\nwalks.\n\n## Does it agree?\n\n* (i) **disagrees**: x\n\n"
                    "## Caveats\n\nc\n")  # fmt: skip
    text = gradients_section(page)
    assert "* (i) **disagrees**: x" in text and "](docs/results/gradients.md)" in text
    assert "walks." not in text and "Caveats" not in text


def test_without_the_page_the_section_names_the_command(tmp_path):
    assert "`make gradients`" in gradients_section(tmp_path / "gradients.md")
