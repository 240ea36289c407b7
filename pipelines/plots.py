"""PNG figures logged with runs: training curves, embedding maps, validation curves per run."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from recsys import atomic  # noqa: E402


def _save(fig, path: Path) -> None:
    """Write the figure atomically (the temporary name keeps the suffix, which picks the format)."""
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def training_curves(history: list[dict[str, float]], path: Path, title: str = "") -> Path | None:
    """One panel per metric over epochs; returns None when there is nothing to plot."""
    keys = sorted({k for h in history for k in h if k != "epoch"})
    if not history or not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        pts = [(h["epoch"], h[key]) for h in history if key in h]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("epoch")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
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
    """One line per run: ``curves[run_label] = [(step, value), ...]``."""
    if not any(curves.values()):
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, pts in curves.items():
        if pts:
            pts = sorted(pts)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    return path
