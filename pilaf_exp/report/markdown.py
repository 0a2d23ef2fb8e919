"""The one Markdown table writer of the reports (the sweep report, RESULTS.md's sections, the
gradient analysis, the burst page)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub Markdown table: the header, its rule, a line a row (cells as `str` gives them); no final newline."""
    text = ["| " + " | ".join(map(str, line)) + " |" for line in [header, *rows]]
    return "\n".join([text[0], "|" + "---|" * len(header), *text[1:]])


def markdown(cells: pd.DataFrame) -> str:
    """A frame of display values as a Markdown table ending in a newline, its index the first column
    (named 'sampler' when unnamed)."""
    rows = ([name, *row] for name, row in cells.iterrows())
    return markdown_table([cells.index.name or "sampler", *cells.columns], rows) + "\n"
