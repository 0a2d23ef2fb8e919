"""The regime map's cells (docs/results/protocol_regimes.yaml), a cell's measured result, and the protocol's
decision table: what `regimes` computes and `regimes_page` writes."""

from __future__ import annotations

from dataclasses import dataclass

from pilaf_exp.report.decide import Decision


@dataclass(frozen=True)
class Cell:
    name: str
    sweep: str
    beta: float
    oracle_std: float
    start: str
    response_length: int
    kept: bool  # made of an earlier claim's runs (its prediction written after them: context, not a test)
    prediction: str  # advantage / tie / "" (none before the runs)
    predicted_gap: float  # T-PILAF (half) - vanilla predicted cosine gap at t = 0.75; nan without one
    oracle: str = "embedded"  # the conf/oracle/ choice

    def knobs(self) -> str:
        oracle = "" if self.oracle == "embedded" else f"{self.oracle} oracle, "
        return (
            f"beta {self.beta:g}, {oracle}r* sd {self.oracle_std:g}, {self.start} start, {self.response_length} tokens"
        )


def load_cells(protocol: dict) -> list[Cell]:
    cells = []
    for name, spec in protocol["cells"].items():
        said = protocol["prediction"].get(name, {})
        prediction = said.get("says", "") if said.get("says") in ("advantage", "tie") else ""
        cells.append(
            Cell(
                name=name,
                sweep=spec["sweep"],
                beta=float(spec["beta"]),
                oracle_std=float(spec["oracle_std"]),
                start=spec["start"],
                response_length=int(spec["response_length"]),
                kept=bool(spec.get("kept", False)),
                prediction=prediction,
                predicted_gap=float(said.get("gap_at_0.75", float("nan"))),
                oracle=spec.get("oracle", "embedded"),
            )
        )
    return cells


@dataclass
class CellResult:
    cell: Cell
    gain: float
    vanilla: float  # mean endpoint of vanilla over seeds
    reached: float  # vanilla's mean final exact J - J(pi_ref), a share of J* - J(pi_ref): is pi* within reach?
    decision: Decision  # PILAF - vanilla, paired by seed, at the cell's margin
    seconds: float  # the cell's sweep, wall time (its done marker)
    holm: str = ""  # the verdict after Holm over the protocol's new cells ("" outside that family)


def agreement(prediction: str, word: str) -> str:
    """The protocol's decision table: the theory's prediction against the cell's verdict."""
    if not prediction:
        return "no prediction before the runs"
    if word == "worse" or (prediction == "tie" and word == "better"):
        return "contradicts the theory"
    if prediction == "advantage":
        return {
            "better": "theory confirmed",
            "equivalent": "advantage not shown (below the margin, if any)",
        }.get(word, "advantage not shown (underpowered)")
    return "theory confirmed (tie)" if word == "equivalent" else "undecided"
