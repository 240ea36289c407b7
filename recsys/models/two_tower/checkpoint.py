"""Tensors and training state as .npy + JSON (no pickle), written atomically.

A checkpoint directory ``<checkpoint_dir>/last`` holds everything needed to continue the same run:
model parameters, AdamW moments and step counts, the training generator state, the epoch/step counters,
early-stopping state and the best parameters so far. It is written to a temporary sibling and
renamed into place, so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsys.atomic import atomic_dir


def save_tensors(directory: Path, tensors: dict[str, torch.Tensor]) -> None:
    """One ``<i>.npy`` per tensor plus ``tensors.json`` mapping names to files, dtypes and shapes."""
    directory.mkdir(parents=True, exist_ok=True)
    index = {}
    for i, (name, t) in enumerate(tensors.items()):
        arr = t.detach().cpu()
        np.save(directory / f"{i}.npy", arr.float().numpy() if arr.dtype == torch.bfloat16 else arr.numpy())
        index[name] = {"file": f"{i}.npy", "dtype": str(arr.dtype).removeprefix("torch.")}
    (directory / "tensors.json").write_text(json.dumps(index, indent=1))


def load_tensors(directory: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Read what :func:`save_tensors` wrote, restoring each tensor's dtype."""
    if not (directory / "tensors.json").is_file():
        raise FileNotFoundError(f"{directory} holds no tensors (tensors.json missing); was it saved by this model?")
    index = json.loads((directory / "tensors.json").read_text())
    out = {}
    for name, meta in index.items():
        arr = np.load(directory / meta["file"], allow_pickle=False)
        out[name] = torch.as_tensor(arr).to(device=device, dtype=getattr(torch, meta["dtype"]))
    return out


def optimizer_tensors(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """AdamW per-parameter state (``<param index>.<key>``) in parameter order."""
    out = {}
    for i, p in enumerate(params):
        for key, val in opt.state.get(p, {}).items():
            out[f"{i}.{key}"] = val if torch.is_tensor(val) else torch.tensor(val)
    return out


def load_optimizer_tensors(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter],
                           tensors: dict[str, torch.Tensor]) -> None:
    for name, val in tensors.items():
        i, key = name.split(".", 1)
        p = params[int(i)]
        # unfused AdamW keeps `step` on the CPU (unless capturable); fused AdamW and the moments keep
        # everything with the parameter
        on_cpu = key == "step" and not (opt.defaults.get("fused") or opt.defaults.get("capturable"))
        opt.state[p][key] = val.cpu() if on_cpu else val.to(p.device)


def write_checkpoint(root: Path, groups: dict[str, dict[str, torch.Tensor]], state: dict[str, Any]) -> Path:
    """Atomically replace ``root/last`` with the tensor groups (one sub-folder each) and ``state.json``."""
    final = root / "last"
    with atomic_dir(final) as tmp:
        for name, tensors in groups.items():
            save_tensors(tmp / name, tensors)
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
    return final


def read_checkpoint(root: Path, device: torch.device | str = "cpu") -> tuple[dict[str, dict], dict[str, Any]] | None:
    """``(groups, state)`` from ``root/last``, or None when there is no checkpoint yet."""
    final = root / "last"
    if not (final / "state.json").is_file():
        return None
    state = json.loads((final / "state.json").read_text())
    groups = {d.name: load_tensors(d, device) for d in sorted(final.iterdir()) if d.is_dir()}
    return groups, state
