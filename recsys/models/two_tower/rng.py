"""The random draws of training (dropout, ID dropout) come from the training loop's own generator.

:class:`~recsys.models.two_tower.loop.TrainLoop` makes a ``torch.Generator`` seeded by the config and
installs it for the calling thread with :func:`use_generator`; :func:`rand` draws from it (or from
torch's global generator outside a training loop). So a training run never depends on, or changes,
torch's global RNG: two models trained at once in two threads (an ensemble's members) each get the
same draws as when trained alone, and a checkpoint holds the one generator state that resume needs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_local = threading.local()


@contextmanager
def use_generator(gen: torch.Generator) -> Iterator[torch.Generator]:
    """Make ``gen`` the source of :func:`rand` in this thread for the ``with`` block."""
    previous = getattr(_local, "gen", None)
    _local.gen = gen
    try:
        yield gen
    finally:
        _local.gen = previous


def rand(shape: torch.Size | tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) float32 draws of ``shape`` from this thread's training generator."""
    return torch.rand(shape, device=device, generator=getattr(_local, "gen", None))
