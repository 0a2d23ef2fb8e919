"""`python -m pilaf_exp.analysis.gradients_report DIR [--out docs/results]`: the gradient analysis's
table (Markdown + CSV), figure and results section from the JSON files
`python -m pilaf_exp.analysis.gradients` wrote below DIR.

Per (training step, sampler): the mean over seeds and its 95% t interval of the cosine between minus
the expected DPO gradient and grad J, of the first-order gain in J per annotation and of the batch
signal-to-noise ratio along grad J; each sampler minus vanilla paired by seed; the Monte Carlo error
of the cosine (two independent halves) beside it. Writes <out>/gradients.md and <out>/gradients/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pilaf_exp.analysis.gradients_figure import plot
from pilaf_exp.analysis.gradients_table import load, markdown_table, summarise
from pilaf_exp.analysis.gradients_text import section


def write(root: Path, out: Path) -> list[Path]:
    rows, records = load(root)
    summary = summarise(rows)
    folder = out / "gradients"
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "gradients_table.csv", folder / "gradients_table.md", folder / "gradients_per_run.csv"]
    summary.to_csv(written[0], index=False)
    written[1].write_text(markdown_table(summary) + "\n")
    rows.drop(columns=["cosine_halves", "gain_halves", "snr_halves"]).to_csv(written[2], index=False)
    written += plot(summary, folder / "gradients")
    text = section(summary, rows, records, markdown_table(summary), figure="gradients/gradients.png")
    (out / "gradients.md").write_text(text)
    return [*written, out / "gradients.md"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Table, figure and text of the gradient analysis.")
    parser.add_argument("results", type=Path, help="a directory searched recursively for the analysis's JSON files")
    parser.add_argument("--out", type=Path, default=Path("docs/results"), help="writes gradients.md and gradients/")
    args = parser.parse_args(argv)
    try:
        written = write(args.results, args.out)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {len(written)} files to {args.out}")


if __name__ == "__main__":
    main()
