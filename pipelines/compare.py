"""`recsys experiments compare`: an experiment's runs as a terminal table, CSV, Markdown and PNG figures.

The terminal table is for reading: model runs only (pipeline parent runs with ``include_pipeline``), the
chosen metrics, then the params that differ among the runs shown, best first, cut to fit ``width``
columns (a note names what did not fit). The CSV and Markdown keep everything: every param (also the ones
equal in every run) and every final metric. The figures: validation curves per epoch, a bar chart of the
test metrics with the evaluation protocol in the caption, and each run's training curves.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from pipelines import plots, tracking
from recsys import atomic

DEFAULT_METRICS = ("test_hr_10", "test_ndcg_10", "val_ndcg_10")
BAR_METRICS = ("test_hr_10", "test_ndcg_10", "test_hr_20", "test_ndcg_20", "test_mrr")
WIDTH = 120
_CELL = 14  # widest param value shown in the terminal table


@dataclass
class Comparison:
    """One row per run, best ``metric`` first.

    ``columns`` is the terminal table (run, chosen metrics, differing params); ``all_columns`` what the
    CSV and Markdown hold. ``curves[label][metric]`` = [(epoch, value)], ``protocol`` the shared evaluation
    protocol (params ``eval_*`` equal in every run).
    """

    columns: list[str]
    rows: list[dict[str, str]]
    curves: dict[str, dict[str, list[tuple[int, float]]]]
    all_columns: list[str] = field(default_factory=list)
    metric: str = "test_ndcg_10"
    protocol: dict[str, str] = field(default_factory=dict)
    test_metrics: list[str] = field(default_factory=list)


def _val_name(metric: str) -> str:
    return metric.split("_", 1)[1] if metric.startswith(("test_", "val_")) else metric


def compare(experiment: str, metric: str = "test_ndcg_10", max_runs: int = 100,
            metrics: tuple[str, ...] | None = None, include_pipeline: bool = False) -> Comparison:
    """Collect the runs of ``experiment``: the params that differ between them and their final metrics."""
    mlflow.set_tracking_uri(tracking.tracking_uri())
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise ValueError(f"no experiment named {experiment!r} in {tracking.tracking_uri()}; experiments: {names}")
    runs = client.search_runs([exp.experiment_id], max_results=max_runs)
    # a model trained again after a kill before its pipeline marker: only the run that counts is compared
    runs = [r for r in runs if "superseded" not in r.data.tags]
    runs = [r for r in runs if "model" in r.data.tags or (include_pipeline and "pipeline_run" in r.data.tags)]
    if not runs:
        raise ValueError(f"experiment {experiment!r} has no model runs yet; run `recsys train --config ...` first")
    param_keys = sorted({k for r in runs for k in r.data.params})
    differing = [k for k in param_keys if len({r.data.params.get(k) for r in runs}) > 1]
    differing.sort(key=lambda k: (not k.startswith("model."), not k.startswith("data."), k))  # model params first
    final = sorted({k for r in runs for k in r.data.metrics if k.startswith(("test_", "val_"))})
    chosen = [m for m in (metrics or (metric, *DEFAULT_METRICS)) if m in final]
    chosen = list(dict.fromkeys(chosen))  # the sort metric first, no repeats
    rows, curves = [], {}
    for r in runs:
        label = f"{r.info.run_name} ({r.info.run_id[:8]})"
        row = {"run": label, "status": r.info.status}
        row.update({k: r.data.params.get(k, "") for k in param_keys})
        row.update({k: _fmt(r.data.metrics.get(k)) for k in final})
        rows.append(row)
        curves[label] = {}
        for name in ("train_loss", "train_lr", f"{tracking.EPOCH_VAL}{_val_name(metric)}",
                     f"{tracking.EPOCH_VAL}hr_10", "train_epoch_seconds"):
            hist = client.get_metric_history(r.info.run_id, name) if name in r.data.metrics else []
            if hist:
                curves[label][name] = sorted((m.step, m.value) for m in hist)
    rows.sort(key=lambda row: -float(row.get(metric) or "-inf"))
    curves = {row["run"]: curves[row["run"]] for row in rows}  # figures colour the runs in the table's order
    protocol = {k: runs[0].data.params[k] for k in param_keys
                if k.startswith("eval_") and k not in differing and k in runs[0].data.params}
    return Comparison(["run", *chosen, *differing], rows, curves, ["run", "status", *param_keys, *final], metric,
                      protocol, [m for m in BAR_METRICS if m in final])


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}" if abs(v) < 1000 else f"{v:.0f}"


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def _short_run(label: str, width: int = 26) -> str:
    """``name (id)`` cut in the name, so the run id stays visible."""
    if len(label) <= width or " (" not in label:
        return _short(label, width)
    name, rid = label.rsplit(" (", 1)
    return name[: width - len(rid) - 3] + "~ (" + rid


def to_text(c: Comparison, width: int = WIDTH) -> str:
    """The table for a terminal: at most ``width`` characters a line; columns that do not fit are named below."""
    headers = {col: col.removeprefix("model.") for col in c.columns}
    cells = {col: [_short_run(r["run"]) if col == "run" else _short(r.get(col, ""), _CELL) for r in c.rows]
             for col in c.columns}
    widths = {col: max(len(headers[col]), *(len(v) for v in cells[col])) for col in c.columns}
    shown, used = [], -2
    for col in c.columns:
        if used + 2 + widths[col] > width:
            break
        shown.append(col)
        used += 2 + widths[col]
    left_out = [col for col in c.columns if col not in shown]
    lines = ["  ".join(headers[col].ljust(widths[col]) for col in shown).rstrip()]
    lines.append("  ".join("-" * widths[col] for col in shown))
    lines += ["  ".join(cells[col][i].ljust(widths[col]) for col in shown).rstrip() for i in range(len(c.rows))]
    if left_out:
        note = f"{len(left_out)} more differing column(s) in the CSV and Markdown: " + ", ".join(left_out)
        lines.append(_short(note, width))
    return "\n".join(lines)


def to_markdown(c: Comparison) -> str:
    lines = ["| " + " | ".join(c.all_columns) + " |", "|" + "---|" * len(c.all_columns)]
    lines += ["| " + " | ".join(r.get(col, "") for col in c.all_columns) + " |" for r in c.rows]
    return "\n".join(lines) + "\n"


def to_csv(c: Comparison) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=c.all_columns, extrasaction="ignore")
    w.writeheader()
    w.writerows(c.rows)
    return buf.getvalue()


def protocol_caption(c: Comparison) -> str:
    p = c.protocol
    parts = [f"split {p['eval_split']}" if "eval_split" in p else "",
             {"True": "history excluded", "auto": "history excluded or kept as each run chose on validation "
              "(tag exclude_seen)"}.get(p.get("eval_exclude_history", ""), ""),
             f"ks {p['eval_ks']}" if "eval_ks" in p else "",
             f"data {p['eval_fingerprint'][:12]}" if "eval_fingerprint" in p else ""]
    return "full ranking of all items; " + ", ".join(x for x in parts if x)


def write_reports(c: Comparison, out_dir: Path, experiment: str, metric: str) -> list[Path]:
    """Write ``<experiment>.csv`` and ``.md`` (everything), ``_val_curves.png``, ``_test_metrics.png`` and
    ``_training_curves.png`` into ``out_dir``; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, text in ((".csv", to_csv(c)), (".md", to_markdown(c))):
        p = out_dir / f"{experiment}{suffix}"
        atomic.write_text(p, text)
        written.append(p)
    val_series = f"{tracking.EPOCH_VAL}{_val_name(metric)}"
    figures = (
        plots.validation_curves({k: v.get(val_series, []) for k, v in c.curves.items()}, val_series,
                                out_dir / f"{experiment}_val_curves.png"),
        plots.metric_bars(c.rows, c.test_metrics, out_dir / f"{experiment}_test_metrics.png",
                          caption=protocol_caption(c)),
        plots.training_grid(c.curves, out_dir / f"{experiment}_training_curves.png"),
    )
    return written + [p for p in figures if p is not None]
