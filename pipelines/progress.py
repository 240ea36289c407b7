"""Progress of long training: on a terminal a bar over the epochs (:func:`epoch_bar`), elsewhere (a cron
log, a pipe) one line per epoch (:func:`epoch_progress`): loss, validation metric, time per epoch, time left.
:func:`progress` picks one.

    >>> lines = []
    >>> cb = epoch_progress("als", 10, lines.append, clock=iter([0.0, 30.0]).__next__)
    >>> cb(1, {"loss": 0.5, "val_ndcg_10": 0.04})
    >>> lines[0]
    '  [als] epoch 1/10  loss 0.5000  val_ndcg_10 0.0400  30.0 s/epoch, at most 4 min 30 s left'
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from recsys.models.base import EpochCallback, StopTraining

#: the figures a progress line shows, when the epoch reports them
SHOWN = ("loss", "val_ndcg_10", "val_hr_10", "lr_backoffs")


def epoch_progress(name: str, total: int | None, echo: Callable[[str], None],
                   clock: Callable[[], float] = time.perf_counter) -> EpochCallback:
    """An ``on_epoch_end`` callback that echoes one line per epoch.

    Parameters
    ----------
    name : the model's label, shown in brackets.
    total : epochs the config asks for (None: unknown); early stopping may end sooner, so the time left is
        an upper bound ("at most").
    echo : where the line goes (``print``, ``typer.echo``, the pipeline's echo).
    clock : seconds, monotonic (a parameter for tests).
    """
    start = clock()

    def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
        per_epoch = (clock() - start) / max(epoch, 1)
        figures = "  ".join(f"{k} {metrics[k]:.4f}" for k in SHOWN if k in metrics and k != "lr_backoffs")
        if metrics.get("lr_backoffs"):
            figures += f"  lr halved {int(metrics['lr_backoffs'])}x"
        left = "" if not total else f", at most {_duration(per_epoch * max(total - epoch, 0))} left"
        parts = [f"  [{name}] epoch {epoch}/{total or '?'}", figures, f"{per_epoch:.1f} s/epoch{left}"]
        echo("  ".join(p for p in parts if p))

    return on_epoch_end


def epoch_bar(name: str, total: int | None, stream: TextIO) -> EpochCallback:
    """An ``on_epoch_end`` callback that advances a tqdm bar by one epoch on ``stream``, its postfix the epoch's
    figures (loss, validation NDCG@10 / HR@10); ``callback.close()`` ends the bar (early stopping may end the
    fit before ``total``)."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=f"[{name}]", unit="epoch", file=stream, leave=True, dynamic_ncols=True)

    def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
        bar.set_postfix({k: f"{metrics[k]:.4f}" for k in SHOWN if k in metrics and k != "lr_backoffs"},
                        refresh=False)
        bar.update(epoch - bar.n)

    on_epoch_end.close = bar.close  # type: ignore[attr-defined]
    return on_epoch_end


def progress(name: str, total: int | None, echo: Callable[[str], None],
             stream: TextIO | None = None) -> EpochCallback:
    """:func:`epoch_bar` when ``stream`` (default stderr) is a terminal, else :func:`epoch_progress` lines
    through ``echo``. The callback has ``close()`` either way."""
    stream = stream if stream is not None else sys.stderr
    if stream.isatty():
        return epoch_bar(name, total, stream)
    cb = epoch_progress(name, total, echo)
    cb.close = lambda: None  # type: ignore[attr-defined]
    return cb


def time_budget(minutes: float, clock: Callable[[], float] = time.perf_counter) -> EpochCallback:
    """An ``on_epoch_end`` callback that raises :class:`~recsys.models.base.StopTraining` after the first epoch
    that ends ``minutes`` or more after it was made (the fit then ends as after its last epoch)."""
    start = clock()

    def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
        spent = (clock() - start) / 60.0
        if spent >= minutes:
            raise StopTraining(f"time budget of {minutes:g} min reached after epoch {epoch} ({spent:.1f} min)")

    return on_epoch_end


def chain(*callbacks: EpochCallback | None) -> EpochCallback:
    """One ``on_epoch_end`` that calls each of ``callbacks`` (None ones skipped) in order."""
    live = [cb for cb in callbacks if cb is not None]

    def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
        for cb in live:
            cb(epoch, metrics)

    return on_epoch_end


def total_epochs(config: object) -> int | None:
    """The epochs (or iterations) a model config asks for; None for a model without epochs."""
    for key in ("epochs", "iterations"):
        if hasattr(config, key):
            total = int(getattr(config, key))
            if getattr(config, "init_weights", "") and getattr(config, "warm_epochs", 0):  # a warm start's bound
                total = min(total, int(config.warm_epochs))
            return total
    return None


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m} min"
