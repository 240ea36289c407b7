"""Export of the two-tower user encoder for serving without torch.

Both towers are written as plain arrays (one ``.npy`` per ``state_dict`` entry of the user tower plus
``item_table``, the item tower's vectors that histories are made of) and a JSON spec, read back by
:class:`recsys.models.two_tower.numpy_encoder.NumpyUserEncoder` (numpy only). ONNX export was not
used: the ``onnx`` package (which ``torch.onnx.export`` needs) is not installed here, and the numpy
encoder can be verified against torch in a test, which an unverifiable ONNX graph could not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recsys.models.base import atomic_dir, write_json
from recsys.models.two_tower.ensemble import TwoTowerEnsemble
from recsys.models.two_tower.model import TwoTower


@torch.no_grad()
def user_encoder_arrays(model: TwoTower) -> tuple[dict, dict[str, np.ndarray]]:
    """``(spec, weights)`` of the fitted model's user tower; ``weights["item_table"]`` is (n_items + 1, dim)."""
    net = model._require_net()
    net.eval()
    cfg = model.config
    ids = torch.arange(model.n_items + 1, device=model.device)
    seen = torch.as_tensor(model.item_seen, device=model.device) if net["item"].has_features else None
    weights = {"item_table": net["item"](ids, seen).float().cpu().numpy()}
    weights.update({k: v.float().cpu().numpy() for k, v in net["user"].state_dict().items()})
    spec = {"kind": cfg.user_tower, "pooling": cfg.pooling, "dim": cfg.dim, "max_len": cfg.max_len,
            "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "similarity": cfg.similarity,
            "weights": sorted(weights)}
    return spec, weights


def export_user_encoder(model: TwoTower | TwoTowerEnsemble, directory: str | Path) -> Path:
    """Write ``encoder.json`` + one ``<name>.npy`` per weight into ``directory`` (atomically); for an
    ensemble, one such folder per member (``member_<i>/``) beside an ``encoder.json`` of kind "ensemble"."""
    with atomic_dir(directory) as tmp:
        if isinstance(model, TwoTowerEnsemble):
            for i, member in enumerate(model._require_members()):
                _write_encoder(tmp / f"member_{i}", *user_encoder_arrays(member))
            write_json(tmp / "encoder.json", {"kind": "ensemble", "members": model.config.members,
                                              "max_len": model.config.max_len, "similarity": model.similarity})
        else:
            _write_encoder(tmp, *user_encoder_arrays(model))
    return Path(directory)


def _write_encoder(directory: Path, spec: dict, weights: dict[str, np.ndarray]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, arr in weights.items():
        np.save(directory / f"{name}.npy", arr)
    write_json(directory / "encoder.json", spec)
