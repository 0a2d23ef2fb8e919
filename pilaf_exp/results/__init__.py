"""`make results` (`python -m pilaf_exp.results`): the protocol, the claims and their verdicts, bursts,
and RESULTS.md rebuilt from the kept runs."""
