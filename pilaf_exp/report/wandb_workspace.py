"""A saved W&B workspace view for one sweep (`python -m pilaf_exp.report DIR --wandb --workspace`),
built with the `wandb-workspaces` library: J against annotations by sampler with a band over
seeds, reward against KL, the evaluation curves by training step, the sweep's summary table and
the labelled pairs. Saving a view needs the W&B server; offline (or when the server refuses) the
view's spec (the JSON the library would send) is written to the report directory instead."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pilaf_exp.infra.names import (
    ANNOTATIONS,
    EVAL_J,
    EVAL_KL,
    EVAL_REWARD,
    FIGURE,
    GLOBAL_STEP,
    LABELLED_PAIRS,
    TRAIN_LOSS,
)

SPEC_FILE = "wandb_workspace.json"
SUMMARY_TABLES = ("_table", "_efficiency")  # of the report run's tables, those the summary section shows


def sections(tables: list[str]) -> list[Any]:
    """The view's sections, top to bottom; `tables` are the report run's table keys."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    by_sampler = {"groupby": wr.Config("sampler"), "groupby_aggfunc": "mean"}
    efficiency = [
        wr.LinePlot(
            title="J vs annotations (mean, min-max over seeds)",
            x=ANNOTATIONS,
            y=[EVAL_J],
            groupby_rangefunc="minmax",
            **by_sampler,
        ),
        wr.LinePlot(title="reward vs annotations", x=ANNOTATIONS, y=[EVAL_REWARD], **by_sampler),
        wr.LinePlot(title="KL vs annotations", x=ANNOTATIONS, y=[EVAL_KL], **by_sampler),
    ]
    trade_off = [
        wr.LinePlot(title="reward vs KL, every evaluation", x=EVAL_KL, y=[EVAL_REWARD], **by_sampler),
        wr.ScatterPlot(title="final reward vs final KL, one point per run", x=EVAL_KL, y=EVAL_REWARD),
    ]
    by_step = [
        wr.LinePlot(title=f"{key} vs training step", x=GLOBAL_STEP, y=[key], **by_sampler)
        for key in (EVAL_J, EVAL_REWARD, EVAL_KL, TRAIN_LOSS)
    ]
    summary = [wr.WeavePanelSummaryTable(table_name=name) for name in tables if name.endswith(SUMMARY_TABLES)]
    summary.append(wr.RunComparer(diff_only="split"))
    media = [wr.WeavePanelSummaryTable(table_name=LABELLED_PAIRS), wr.MediaBrowser(media_keys=[FIGURE])]
    return [
        ws.Section(name="J vs annotations", panels=efficiency, is_open=True),
        ws.Section(name="reward vs KL", panels=trade_off, is_open=True),
        ws.Section(name="summary table", panels=summary, is_open=True),
        ws.Section(name="by training step", panels=by_step),
        ws.Section(name="labelled pairs and figures", panels=media),
    ]


def workspace(entity: str, project: str, group: str | None, tables: list[str]) -> Any:
    """The view: the sweep's runs (its W&B group), grouped by sampler, annotations on the x-axis."""
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    runset = ws.RunsetSettings(
        filters=[expr.Metric("Group") == group] if group else "",
        groupby=[expr.Config("sampler")],
        pinned_columns=["config:sampler", "config:seed", "summary:eval/J", "summary:optimum/gain_share"],
    )
    return ws.Workspace(
        entity=entity,
        project=project,
        name=f"pilaf_exp {group or project}",
        sections=sections(tables),
        settings=ws.WorkspaceSettings(x_axis=ANNOTATIONS),
        runset_settings=runset,
    )


def save_workspace(report_dir: Path, project: str, group: str | None, tables: list[str], offline: bool) -> str:
    """Save the view to W&B (online), else write its spec to <report_dir>/wandb_workspace.json;
    returns one line saying which."""
    entity = os.environ.get("WANDB_ENTITY", "")
    if not offline:
        try:
            import wandb

            view = workspace(entity or wandb.Api().default_entity, project, group, tables).save()
            return f"saved the W&B workspace view: {view.url}"
        except Exception as error:  # no server, no entity, no permission: keep the spec instead
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            offline_reason = f"W&B would not save the view ({reason})"
    else:
        offline_reason = "W&B is offline"
    view = workspace(entity, project, group, tables)._to_model()  # what Workspace.save() sends
    spec = view.model_dump(by_alias=True, exclude_none=True, mode="json")
    path = report_dir / SPEC_FILE
    path.write_text(json.dumps(spec, indent=1) + "\n")
    return f"{offline_reason}: wrote the workspace view's spec to {path}; run again with WANDB_API_KEY set to save it"
