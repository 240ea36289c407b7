"""The epoch loop of the two-tower models: optimiser, schedule, early stopping, per-epoch
checkpoints and resume.

The loop is given the network, its config, the device and the process group, and returns the
per-epoch history (as nanoGPT's ``train.py`` does); it never reaches into a model object, so
:mod:`~recsys.models.two_tower.model` imports it and nothing imports back.

Resume continues the *same* run: parameters, AdamW moments, the loop's generator (dropout, ID dropout;
:mod:`~recsys.models.two_tower.rng`),
the step counter (schedule, uniform negatives) and the early-stopping state are restored, and the
batch order depends only on ``(seed, epoch)``, so an interrupted-and-resumed run ends with the same
parameters as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsys.config import to_dict
from recsys.models.base import EpochCallback, NaNLossError, StopTraining
from recsys.models.two_tower import rng
from recsys.models.two_tower.checkpoint import (
    load_optimizer_tensors,
    optimizer_tensors,
    read_checkpoint,
    write_checkpoint,
)
from recsys.models.two_tower.config import TwoTowerConfig
from recsys.models.two_tower.data import (
    epoch_batches,
    epoch_steps,
    target_counts,
    training_windows,
    trim_padding,
)
from recsys.models.two_tower.ddp import DistInfo, all_reduce_sum, broadcast_parameters, sync_gradients
from recsys.models.two_tower.losses import StreamingFrequency
from recsys.models.two_tower.train import StepInputs, lr_at, step_loss
from recsys.prepare.sequences import Sequences

log = logging.getLogger(__name__)


class TrainLoop:
    """Trains ``net`` (item and user towers) on ``train``; one instance per ``fit`` call."""

    def __init__(self, net: torch.nn.Module, config: TwoTowerConfig, device: torch.device, dist: DistInfo,
                 train: Sequences, checkpoint_dir: Path | None) -> None:
        self.net, self.cfg, self.device, self.dist, self.ckpt = net, config, device, dist, checkpoint_dir
        self.n_items = train.n_items
        self.windows = training_windows(train, self.cfg.max_len, self.cfg.windows)
        self.params = list(net.parameters())
        # fused: one pass per parameter instead of ~6 (the full-softmax item table is updated densely every step)
        self.opt = torch.optim.AdamW(self.params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay, fused=True)
        self.total_steps = max(epoch_steps(len(self.windows), self.cfg.batch_size, self.cfg.epochs,
                                           self.cfg.epoch_examples), 1)
        counts = target_counts(train)
        prob = torch.as_tensor(counts / max(counts.sum(), 1.0), dtype=torch.float32, device=device)
        streaming = StreamingFrequency(train.n_items + 1, device=device) if self.cfg.logq == "streaming" else None
        self.aux = StepInputs(train.n_items, prob, streaming)
        self.state: dict[str, Any] = {"epoch": 0, "step": 0, "best": -math.inf, "best_epoch": 0, "bad_epochs": 0,
                                      "history": []}
        self.best_params: dict[str, torch.Tensor] | None = None
        self.stopped: str | None = None  # the StopTraining message when a callback ended the run early
        # dropout draws; the same on every rank, as a checkpoint holds one state
        self.gen = torch.Generator(device=device).manual_seed(self.cfg.seed)
        broadcast_parameters(net, dist)

    # -- the loop --------------------------------------------------------------------------------
    def run(self, on_epoch_end: EpochCallback | None, validate: Callable[[], dict[str, float]] | None,
            resume: bool) -> list[dict[str, float]]:
        """Train; ``validate()`` scores the network as it stands. Returns the per-epoch history."""
        with rng.use_generator(self.gen):
            return self._run(on_epoch_end, validate, resume)

    def _run(self, on_epoch_end: EpochCallback | None, validate: Callable[[], dict[str, float]] | None,
             resume: bool) -> list[dict[str, float]]:
        if self.ckpt is not None and resume:
            self._restore()
        for epoch in range(self.state["epoch"] + 1, self.cfg.epochs + 1):
            if self.state["bad_epochs"] >= self.cfg.patience > 0:
                break  # a resumed run that had already stopped early
            t0 = time.perf_counter()
            metrics = {"loss": self._epoch(epoch), "lr": self.opt.param_groups[0]["lr"],
                       "epoch_seconds": time.perf_counter() - t0}
            if validate is not None:
                metrics.update(validate())
            self._early_stopping(epoch, metrics, validate is not None)
            self.state["epoch"] = epoch
            self.state["history"].append(metrics)
            if self.ckpt is not None and self.dist.is_main:
                self._save()
            try:
                if on_epoch_end is not None:
                    on_epoch_end(epoch, metrics)
            except StopTraining as stop:  # a budget: end here, as after the last epoch (best checkpoint restored)
                self.stopped = str(stop)
                break
        if self.best_params is not None and self.cfg.restore_best:
            self.net.load_state_dict(self.best_params)
        return list(self.state["history"])

    def _epoch(self, epoch: int) -> float:
        self.net.train()
        info, dev = self.dist, self.device
        total, count = 0.0, 0.0
        for idx in epoch_batches(len(self.windows), self.cfg.batch_size, self.cfg.seed, epoch, info.rank,
                                 info.world_size, self.windows.lengths, self.cfg.epoch_examples):
            inp, tgt = trim_padding(*self.windows.batch(idx))  # outputs are invariant to padding
            inp, tgt = torch.as_tensor(inp, device=dev), torch.as_tensor(tgt, device=dev)
            self.aux.step = self.state["step"]
            loss_sum, n_global = step_loss(self.net, self.cfg, inp, tgt, self.aux, info, dev)
            total += self._apply(loss_sum, n_global)
            count += float(n_global)
        return total / max(count, 1.0)

    def _apply(self, loss_sum: torch.Tensor, n_global: torch.Tensor) -> float:
        """Backward, gradient all-reduce, clipping and the AdamW update; returns the global loss sum."""
        if not torch.isfinite(loss_sum):
            raise NaNLossError(f"two-tower loss is {loss_sum.item()} at step {self.state['step']}; lower lr "
                               f"(now {self.cfg.lr}) or the temperature, or check the data")
        self.opt.zero_grad(set_to_none=True)
        (loss_sum / n_global.clamp_min(1.0)).backward()
        sync_gradients(self.params, self.dist)
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        for g in self.opt.param_groups:
            g["lr"] = lr_at(self.state["step"], self.cfg, self.total_steps)
        self.opt.step()
        self.state["step"] += 1
        return float(all_reduce_sum(loss_sum.detach().float().clone(), self.dist))

    def _early_stopping(self, epoch: int, metrics: dict[str, float], validating: bool) -> None:
        if not validating or (self.cfg.monitor not in metrics and self.cfg.patience == 0):
            return  # nothing to monitor and early stopping off: keep the last epoch
        if self.cfg.monitor not in metrics:
            raise KeyError(f"early stopping monitors {self.cfg.monitor!r} but validate() returned "
                           f"{sorted(metrics)}; set monitor to one of them")
        value = float(metrics[self.cfg.monitor])
        if value > self.state["best"]:
            self.state.update(best=value, best_epoch=epoch, bad_epochs=0)
            self.best_params = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        else:
            self.state["bad_epochs"] += 1

    # -- checkpoints -----------------------------------------------------------------------------
    def _save(self) -> None:
        groups = {"model": self.net.state_dict(), "optim": optimizer_tensors(self.opt, self.params),
                  "rng": {"generator": self.gen.get_state()}}
        if self.best_params is not None:
            groups["best"] = self.best_params
        if self.aux.streaming is not None:
            groups["streaming"] = self.aux.streaming.state()
        state = {**self.state, "config": to_dict(self.cfg), "n_items": self.n_items, "rng_device": self.device.type}
        write_checkpoint(self.ckpt, groups, _json_safe(state))

    def _restore(self) -> None:
        found = read_checkpoint(self.ckpt, self.device)
        if found is None:
            return
        groups, state = found
        if state["n_items"] != self.n_items:
            raise ValueError(f"checkpoint {self.ckpt} was trained on {state['n_items']} items, the data has "
                             f"{self.n_items}; use a fresh checkpoint_dir or resume=False")
        self.net.load_state_dict(groups["model"])
        load_optimizer_tensors(self.opt, self.params, groups["optim"])
        self._restore_generator(groups["rng"]["generator"].cpu(), state.get("rng_device"), state["step"])
        self.best_params = groups.get("best")
        if self.aux.streaming is not None and "streaming" in groups:
            self.aux.streaming.load_state(groups["streaming"])
        self.state = {k: state[k] for k in self.state}
        self.state["best"] = -math.inf if state["best"] is None else state["best"]


    def _restore_generator(self, saved: torch.Tensor, saved_on: str | None, step: int) -> None:
        """The generator state as saved when the device type matches; a CPU (Mersenne Twister) and a
        CUDA (Philox) state do not convert, so resuming on another device reseeds from (seed, step):
        the run continues deterministically, with dropout draws that differ from an uninterrupted one."""
        if saved_on in (None, self.device.type):
            try:
                self.gen.set_state(saved)
                return
            except RuntimeError:  # an old checkpoint without rng_device, written on another device
                pass
        self.gen.manual_seed(self.cfg.seed * 1_000_003 + step)
        log.warning("checkpoint %s was written on %s, resuming on %s: its generator state does not carry over; "
                    "dropout draws reseeded from (seed, step %d)", self.ckpt, saved_on or "another device",
                    self.device.type, step)


def _json_safe(state: dict[str, Any]) -> dict[str, Any]:
    """-inf (no validation yet) as null; numpy scalars as floats."""
    out = dict(state)
    out["best"] = None if not np.isfinite(out["best"]) else float(out["best"])
    out["history"] = [{k: float(v) for k, v in h.items()} for h in out["history"]]
    return out
