"""`recsys experiments compare`: a table of an experiment's runs, as text, CSV, Markdown and PNG."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from pipelines import plots, tracking
from recsys import atomic


@dataclass
class Comparison:
    """Rows of the comparison: one per run, best ``metric`` first."""

    columns: list[str]
    rows: list[dict[str, str]]
    curves: dict[str, list[tuple[int, float]]]


def compare(experiment: str, metric: str = "test_ndcg_10", max_runs: int = 100) -> Comparison:
    """Collect the runs of ``experiment``: the params that differ between runs and the metrics."""
    mlflow.set_tracking_uri(tracking.tracking_uri())
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise ValueError(f"no experiment named {experiment!r} in {tracking.tracking_uri()}; experiments: {names}")
    runs = client.search_runs([exp.experiment_id], max_results=max_runs)
    # a model trained again after a kill before its pipeline marker: only the run that counts is compared
    runs = [r for r in runs if "superseded" not in r.data.tags]
    if not runs:
        raise ValueError(f"experiment {experiment!r} has no runs yet; run `recsys train --config ...` first")
    param_keys = sorted({k for r in runs for k in r.data.params})
    differing = [k for k in param_keys if len({r.data.params.get(k) for r in runs}) > 1]
    metric_keys = sorted({k for r in runs for k in r.data.metrics if k.startswith(("test_", "val_"))})
    val_metric = "val_" + metric.split("_", 1)[1] if metric.startswith("test_") else metric
    rows, curves = [], {}
    for r in runs:
        label = f"{r.info.run_name} ({r.info.run_id[:8]})"
        row = {"run": label, "status": r.info.status}
        row.update({k: r.data.params.get(k, "") for k in differing})
        row.update({k: _fmt(r.data.metrics.get(k)) for k in metric_keys})
        rows.append(row)
        if val_metric in r.data.metrics:
            hist = client.get_metric_history(r.info.run_id, val_metric)
            curves[label] = [(m.step, m.value) for m in hist]
    rows.sort(key=lambda row: -float(row.get(metric) or "-inf"))
    return Comparison(["run", "status", *differing, *metric_keys], rows, curves)


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}" if abs(v) < 1000 else f"{v:.0f}"


def to_text(c: Comparison) -> str:
    widths = {col: max(len(col), *(len(r.get(col, "")) for r in c.rows)) for col in c.columns}
    lines = ["  ".join(col.ljust(widths[col]) for col in c.columns)]
    lines.append("  ".join("-" * widths[col] for col in c.columns))
    lines += ["  ".join(r.get(col, "").ljust(widths[col]) for col in c.columns) for r in c.rows]
    return "\n".join(lines)


def to_markdown(c: Comparison) -> str:
    lines = ["| " + " | ".join(c.columns) + " |", "|" + "---|" * len(c.columns)]
    lines += ["| " + " | ".join(r.get(col, "") for col in c.columns) + " |" for r in c.rows]
    return "\n".join(lines) + "\n"


def to_csv(c: Comparison) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=c.columns)
    w.writeheader()
    w.writerows(c.rows)
    return buf.getvalue()


def write_reports(c: Comparison, out_dir: Path, experiment: str, metric: str) -> list[Path]:
    """Write ``<experiment>.csv``, ``.md`` and ``_val_curves.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, text in ((".csv", to_csv(c)), (".md", to_markdown(c))):
        p = out_dir / f"{experiment}{suffix}"
        atomic.write_text(p, text)
        written.append(p)
    val_metric = "val_" + metric.split("_", 1)[1] if metric.startswith("test_") else metric
    png = plots.validation_curves(c.curves, val_metric, out_dir / f"{experiment}_val_curves.png")
    if png is not None:
        written.append(png)
    return written
