"""PNG figures: training curves (a small grid), embedding maps, validation curves and test-metric bars."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from recsys import atomic  # noqa: E402


def _save(fig, path: Path) -> None:
    """Write the figure atomically (the temporary name keeps the suffix, which picks the format)."""
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


#: the panels of a training-curve grid: (title, [(series, line style)])
PANELS = (("training loss", [("train_loss", "-")]), ("learning rate", [("train_lr", "-")]),
          ("validation per epoch", [("epoch_val_ndcg_10", "-"), ("epoch_val_hr_10", "--")]),
          ("seconds per epoch", [("train_epoch_seconds", "-")]))


def training_grid(curves: dict[str, dict[str, list[tuple[int, float]]]], path: Path, title: str = "") -> Path | None:
    """A 2 x 2 grid (loss, learning rate, validation NDCG@10 solid and HR@10 dashed, seconds per epoch), one
    line per run: ``curves[run][series] = [(epoch, value), ...]``. Panels without data are left out; returns
    None when there is nothing to plot."""
    panels = [(t, series) for t, series in PANELS if any(s in c for c in curves.values() for s, _ in series)]
    if not panels:
        return None
    cols = 2 if len(panels) > 1 else 1
    rows = (len(panels) + 1) // 2
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.2 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (panel, series) in zip(axes.flat, panels, strict=False):
        for i, (run, c) in enumerate(curves.items()):
            for name, style in series:
                if c.get(name):
                    pts = sorted(c[name])
                    label = run if style == "-" else None
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", ms=3,
                            color=colours[i % len(colours)], label=label)
        ax.set_title(panel + (" (NDCG@10 solid, HR@10 dashed)" if len(series) > 1 else ""), fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    drawn = [(i, run) for i, (run, c) in enumerate(curves.items())
             if any(c.get(name) for _, ser in panels for name, _ in ser)]
    if len(curves) > 1 and drawn:  # every run with a line in any panel, in its colour
        handles = [Line2D([], [], color=colours[i % len(colours)], marker="o", ms=3) for i, _ in drawn]
        fig.legend(handles, [run for _, run in drawn], loc="lower center", ncol=min(len(drawn), 3), fontsize=8,
                   frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.08 if len(curves) > 1 else 0, 1, 1))
    _save(fig, path)
    return path


def training_curves(history: list[dict[str, float]], path: Path, title: str = "") -> Path | None:
    """One run's per-epoch figures (``history`` rows: epoch + series) as a :func:`training_grid`."""
    series = {k for h in history for k in h if k != "epoch"}
    curve = {k: [(h["epoch"], h[k]) for h in history if k in h] for k in series}
    return training_grid({title or "run": curve}, path, title)


def metric_bars(rows: list[dict[str, str]], metrics: list[str], path: Path, caption: str = "") -> Path | None:
    """Grouped bars: one group per metric, one bar per run (``rows[i]["run"]``, values as strings)."""
    metrics = [m for m in metrics if any(r.get(m) for r in rows)]
    if not metrics or not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(metrics) + 2), 4.2))
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        values = [float(r[m]) if r.get(m) else 0.0 for m in metrics]
        ax.bar(np.arange(len(metrics)) + (i - (len(rows) - 1) / 2) * width, values, width, label=r["run"])
    ax.set_xticks(np.arange(len(metrics)), [m.removeprefix("test_") for m in metrics])
    ax.set_ylabel("test")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(rows) > 6 else 1)
    if caption:
        fig.text(0.5, 0.01, caption, ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.05 if caption else 0, 1, 1))
    _save(fig, path)
    return path


def embedding_map(
    item_vectors: np.ndarray,
    path: Path,
    colour: np.ndarray,
    colour_label: str,
    max_points: int = 5000,
    seed: int = 0,
) -> Path:
    """2-D PCA projection of item vectors (rows 1..n; row 0 is padding) coloured by ``colour``.

    Parameters
    ----------
    item_vectors : (n_items + 1, d)
    colour : (n_items + 1,) numbers (popularity) or integer category codes.
    """
    vecs = np.asarray(item_vectors[1:], dtype=np.float64)
    col = np.asarray(colour[1:], dtype=np.float64)
    if len(vecs) > max_points:
        keep = np.random.default_rng(seed).choice(len(vecs), max_points, replace=False)
        vecs, col = vecs[keep], col[keep]
    centred = vecs - vecs.mean(axis=0)
    if centred.shape[1] >= 2:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)  # principal axes in vt[:2]
        xy = centred @ vt[:2].T
    else:
        xy = np.column_stack([centred[:, 0], np.zeros(len(centred))])
    fig, ax = plt.subplots(figsize=(5, 4.5))
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=col, s=4, cmap="viridis", alpha=0.7)
    fig.colorbar(sc, ax=ax, label=colour_label)
    ax.set_title(f"item embeddings (PCA), {len(vecs):,} items", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return path


def validation_curves(curves: dict[str, list[tuple[int, float]]], metric: str, path: Path) -> Path | None:
    """One line per run: ``curves[run_label] = [(epoch, value), ...]``, the per-epoch validation series."""
    if not any(curves.values()):
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, pts in curves.items():
        if pts:
            pts = sorted(pts)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=label)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric.removeprefix("epoch_"))
    ax.set_title(f"{metric.removeprefix('epoch_')} after each epoch", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    return path


def gate_timeline(rows: list[dict], path: Path) -> Path:
    """Pipeline runs in order: each candidate's gate metric (green = published, red = rejected, grey = other
    endings) and the champion's value it was gated against (black steps)."""
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(rows) + 2), 4))
    x = np.arange(len(rows))
    champ = [r.get("champion_value") for r in rows]
    if any(c is not None for c in champ):
        ax.step(x, [np.nan if c is None else c for c in champ], where="mid", color="black", lw=1,
                label="champion at gate time")
    styles = {"published": ("o", "tab:green"), "rejected": ("x", "tab:red")}
    for outcome, (marker, colour) in [*styles.items(), ("other", ("s", "tab:gray"))]:
        pick = [i for i, r in enumerate(rows) if (r["outcome"] == outcome) or
                (outcome == "other" and r["outcome"] not in styles)]
        if pick:
            ax.scatter(x[pick], [rows[i]["candidate_value"] for i in pick], marker=marker, color=colour, s=40,
                       label=f"candidate, {outcome}", zorder=3)
    ax.set_xticks(x, [r["run_id"][:15] for r in rows], rotation=60, ha="right", fontsize=7)  # to the second
    ax.set_ylabel(rows[0].get("metric") or "gate metric")
    ax.set_title("pipeline runs: candidate vs champion at the gate", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    return path
