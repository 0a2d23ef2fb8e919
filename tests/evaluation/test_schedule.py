"""One evaluation schedule: sampled evaluation at step 0, every `every` steps, at each trainer's end
and at the last step; exact evaluation at the first and last steps and every `exact_every`."""

from __future__ import annotations

from pilaf_exp.evaluation.schedule import EvalSchedule


def test_sampled_evaluation_steps():
    schedule = EvalSchedule(every=5, last=12)
    assert [s for s in range(13) if schedule.due(s)] == [0, 5, 10, 12]
    assert schedule.due(7, trainer_end=True)  # an iterative round that ends between evaluations


def test_exact_evaluation_steps():
    assert [s for s in range(13) if EvalSchedule(5, 12).exact_due(s)] == [0, 12]
    assert [s for s in range(13) if EvalSchedule(5, 12, exact_every=4).exact_due(s)] == [0, 4, 8, 12]
