"""One optimisation step and the learning-rate schedule of the two-tower model.

The step encodes only what it needs: the whole catalogue for a full softmax, or the unique items of
the batch (history items, targets of every rank, uniform negatives) for a sampled softmax. Its loss
is summed over target positions and divided by the global number of targets, so gradients summed
over ranks (:func:`recsys.models.two_tower.ddp.sync_gradients`) equal the single-process gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from recsys.device import autocast
from recsys.models.two_tower import losses as L
from recsys.models.two_tower.config import TwoTowerConfig
from recsys.models.two_tower.ddp import DistInfo, all_gather_cat, all_reduce_sum


def lr_at(step: int, cfg: TwoTowerConfig, total_steps: int) -> float:
    """Linear warm-up to ``cfg.lr`` over ``warmup_steps``, then cosine decay to ``min_lr_ratio * lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(total_steps - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    floor = cfg.min_lr_ratio * cfg.lr
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class StepInputs:
    """What a step needs besides the batch: frequencies for logQ and the uniform-negative seed."""

    n_items: int
    item_prob: torch.Tensor | None = None  # (V,) for logq = "data"
    streaming: L.StreamingFrequency | None = None  # for logq = "streaming"
    step: int = 0


def step_loss(net: torch.nn.ModuleDict, cfg: TwoTowerConfig, inp: torch.Tensor, tgt: torch.Tensor,
              aux: StepInputs, info: DistInfo, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed loss of this rank's windows ``inp``/``tgt`` (b, T) and the global target count."""
    last_only = cfg.windows == "prefix"  # a prefix's one target is in its last column: encode that position only
    if last_only:
        tgt = tgt[:, -1:]
    keep = tgt > 0  # (b, T or 1) positions with a next item
    pos_ids = tgt[keep]  # (N,)
    n_global = all_reduce_sum(torch.tensor(float(len(pos_ids)), device=device), info)
    with autocast(device, cfg.precision):
        if cfg.loss == "full":
            table = net["item"](torch.arange(aux.n_items + 1, device=device))  # (V, D)
            out = net["user"](table[inp], inp > 0, last_only=last_only)  # (b, T or 1, D)
            loss = L.full_softmax_loss(out[keep], table, pos_ids, cfg.similarity, cfg.temperature)
        else:
            loss = _sampled(net, cfg, inp, keep, pos_ids, aux, info, device, last_only)
    return loss, n_global


def _sampled(net: torch.nn.ModuleDict, cfg: TwoTowerConfig, inp: torch.Tensor, keep: torch.Tensor,
             pos_ids: torch.Tensor, aux: StepInputs, info: DistInfo, device: torch.device,
             last_only: bool) -> torch.Tensor:
    cand_ids, start = all_gather_cat(pos_ids, info)  # every rank's targets are candidates
    n_batch = len(cand_ids)
    labels = start + torch.arange(len(pos_ids), device=device)
    if cfg.n_uniform_negatives:
        # seeded by (seed, step): identical negatives on every rank and after a resume
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + aux.step)
        neg = torch.randint(1, aux.n_items + 1, (cfg.n_uniform_negatives,), generator=g).to(device)
        cand_ids = torch.cat([cand_ids, neg])
    uniq, inv = torch.unique(torch.cat([inp.reshape(-1), cand_ids]), return_inverse=True)
    vecs = net["item"](uniq)  # (U, D) each needed item encoded once
    x = vecs[inv[: inp.numel()]].view(*inp.shape, -1)  # (b, T, D)
    cands = vecs[inv[inp.numel():]]  # (M, D)
    out = net["user"](x, inp > 0, last_only=last_only)[keep]  # (N, D)
    if aux.streaming is not None:
        aux.streaming.update(cand_ids[:n_batch], aux.step + 1)  # same ids on every rank -> same estimate
    log_q = _log_q(cfg, cand_ids, n_batch, aux)
    return L.sampled_softmax_loss(out, cands, cand_ids, log_q, labels, cfg.similarity, cfg.temperature)


def _log_q(cfg: TwoTowerConfig, cand_ids: torch.Tensor, n_batch: int, aux: StepInputs) -> torch.Tensor | None:
    if cfg.logq == "data":
        return L.mixture_log_q(cand_ids, aux.item_prob, n_batch, cfg.n_uniform_negatives, aux.n_items)
    if cfg.logq == "streaming":
        expected = aux.streaming.log_expected_count(cand_ids).exp() + cfg.n_uniform_negatives / aux.n_items
        return torch.log(expected)
    return None
