"""The pipeline's ``[tune]`` table: re-tune a model on a schedule, train with its last study's best in between.

Per tuned model, ``<workdir>/tune/<label>.json`` records its last study: the study name, the log's event
count when it ran, the runs since, and the best parameters. A run re-tunes when there is no study yet,
when ``every_runs`` runs have passed since the last one, or when the log has grown by more than ``growth``
since; each study is new (named after the pipeline, the label and the run) so a changed log never mixes with
an older study. A rerun of the same pipeline run (after a kill) reuses what that run decided.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.config import RunConfig
from pipelines.pipeline_config import TuneSection
from recsys import atomic
from recsys.models.registry import MODELS
from recsys.prepare.format import Prepared


def due(state: dict | None, cfg: TuneSection, n_events: int) -> str | None:
    """Why a study is due now (None: reuse the last one)."""
    if state is None:
        return "no study yet"
    if cfg.every_runs and state["runs_since"] + 1 >= cfg.every_runs:  # this run is the every_runs-th since
        return f"run {state['runs_since'] + 1} since study {state['study']} (every_runs = {cfg.every_runs})"
    grown = n_events / max(state["n_events"], 1) - 1.0
    if cfg.growth and grown > cfg.growth:
        return f"the log grew by {grown:.1%} since study {state['study']} (growth = {cfg.growth})"
    return None


def tuned_params(workdir: Path, run_id: str, pipeline_name: str, label: str, run_cfg: RunConfig, data: Prepared,
                 cfg: TuneSection, out: Path, echo: Callable[[str], None]) -> dict[str, Any]:
    """The searched parameters ``label`` trains with in run ``run_id``: a new study's best when one is due,
    else the last study's best. Records the decision in ``<workdir>/tune/<label>.json``."""
    from pipelines.tune import tune

    path = workdir / "tune" / f"{label}.json"
    state = json.loads(path.read_text()) if path.is_file() else None
    if state is not None and state.get("last_run") == run_id:  # this run decided already (a rerun after a kill)
        return state["best_params"]
    n_events = int(data.report["n_events"])
    why = due(state, cfg, n_events)
    if why is None:
        state = {**state, "runs_since": state["runs_since"] + 1, "last_run": run_id}
        echo(f"  {label}: the best of study {state['study']} (val_{cfg.metric} {state['value']:.4f}); "
             f"{state['runs_since']} runs since it")
    else:
        name = f"{pipeline_name}-{label}-{run_id}"
        echo(f"  {label}: tuning ({why}): study {name}, {cfg.trials} trials")
        res = tune(run_cfg, out, trials=cfg.trials, minutes=cfg.minutes, storage=cfg.storage or None,
                   study_name=name, metric=cfg.metric, echo=echo, data=data, sampler=cfg.sampler,
                   refine=cfg.refine)
        space = MODELS[run_cfg.model_name].search_space
        state = {"study": name, "storage": res.storage, "n_events": n_events, "runs_since": 0, "last_run": run_id,
                 "tuned_in_run": run_id, "why": why, "value": res.best_value,
                 "best_params": {k: v for k, v in res.best_params.items() if k in space}}
    atomic.write_json(path, state)
    return state["best_params"]
