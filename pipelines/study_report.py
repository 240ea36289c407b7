"""A ``recsys tune`` study as `recsys experiments compare --study NAME` shows it: the trials table (best
first; pruned and failed trials after, with why) as text and CSV, and Optuna's optimisation history and
parameter importances (fANOVA) as PNGs."""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path
from typing import Any

from recsys import atomic

ORDER = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "FAIL": 3, "WAITING": 4}


def trial_params(trial: Any) -> dict[str, Any]:
    """A trial's parameters: Optuna's samples and the best encode-time setting it was scored at
    (``pipelines.tune``)."""
    return {**trial.params, **trial.user_attrs.get("encode_time", {})}


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One row per trial: number, state, value, seconds, why it ended (pruned / failed), then its params;
    completed trials best first."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        rows.append({"trial": t.number, "state": t.state.name, "value": t.value, "seconds": seconds,
                     "note": t.user_attrs.get("failed_reason", ""), **trial_params(t)})
    return sorted(rows, key=lambda r: (ORDER.get(r["state"], 5), -(r["value"] or 0.0), r["trial"]))


def to_text(study: Any, rows: list[dict[str, Any]], width: int = 120) -> str:
    params = sorted({k for r in rows for k in r} - {"trial", "state", "value", "seconds", "note"})
    head = ["trial", "state", "value", "s", *params]
    lines = [f"study {study.study_name}: {len(rows)} trials, direction {study.direction.name.lower()}",
             "  ".join(f"{h:>9}" for h in head)]
    for r in rows:
        cells = [str(r["trial"]), r["state"], "-" if r["value"] is None else f"{r['value']:.5f}",
                 "-" if r["seconds"] is None else f"{r['seconds']:.0f}", *[str(r.get(p, "")) for p in params]]
        lines.append(("  ".join(f"{c[:9]:>9}" for c in cells) + (f"  {r['note']}" if r["note"] else ""))[:width])
    return "\n".join(lines)


def write_study_reports(study: Any, rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """``study_<name>.csv``, ``study_<name>_history.png`` and (with two or more completed trials)
    ``study_<name>_importance.png`` in ``out_dir``; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"study_{study.study_name}"
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    written = [out_dir / f"{stem}.csv"]
    atomic.write_text(written[0], buf.getvalue())
    plots = [("history", plot_optimization_history)]
    if sum(r["state"] == "COMPLETE" for r in rows) >= 2:
        plots.append(("importance", plot_param_importances))
    for name, plot in plots:
        with warnings.catch_warnings():  # Optuna marks its matplotlib plots experimental
            warnings.simplefilter("ignore")
            ax = plot(study)
        path = out_dir / f"{stem}_{name}.png"
        with atomic.atomic_path(path) as tmp:
            ax.figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        matplotlib.pyplot.close(ax.figure)
        written.append(path)
    return written


def load_study(name: str, storage: str) -> Any:
    """The study ``name`` in ``storage``; ``ValueError`` naming the studies there when it is absent."""
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise ValueError(f"no study {name!r} in {storage}; studies there: {known or 'none'}") from None
