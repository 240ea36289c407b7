"""Item tower: ID embedding + side features (category bags, hashed title n-grams, dense content vectors).

Feature-level fusion: the parts are summed (``fusion="sum"``) or concatenated and mixed by an MLP
(``"concat"``); ``item_id=False`` leaves the ID embedding out (a content-only tower, the content half
of the ensemble's model-level fusion).

``forward(ids)`` returns one vector per requested item id, so a step only encodes the items it
needs (or the whole catalogue for a full softmax). Bags are gathered from CSR arrays with
vectorised index arithmetic and pooled with ``nn.EmbeddingBag(mode="mean")``.
"""

from __future__ import annotations

import torch
from torch import nn

from recsys.models.two_tower import rng
from recsys.models.two_tower.config import TwoTowerConfig
from recsys.models.two_tower.features import ItemFeatures


def gather_bags(offsets: torch.Tensor, values: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated bag contents of ``ids`` (N,) and their start offsets (N,), for EmbeddingBag."""
    starts = offsets[ids]
    lengths = offsets[ids + 1] - starts
    out_offsets = torch.cumsum(lengths, 0) - lengths  # (N,) exclusive prefix sum
    total = int(lengths.sum())
    # token j of output bag b comes from values[starts[b] + (j - out_offsets[b])]
    shift = torch.repeat_interleave(starts - out_offsets, lengths, output_size=total)
    flat = values[shift + torch.arange(total, device=ids.device)]
    return flat, out_offsets


class ItemTower(nn.Module):
    """Item ids (N,) -> vectors (N, dim); row/id 0 (padding) maps to a zero ID embedding."""

    def __init__(self, cfg: TwoTowerConfig, n_items: int, features: ItemFeatures | None = None) -> None:
        super().__init__()
        d = cfg.dim
        if cfg.fusion == "model":
            raise ValueError('fusion = "model" (model-level: an ID tower and a content tower scored separately) '
                             'is the two_tower_ensemble model\'s; a single tower fuses at feature level: "sum" or '
                             '"concat"')
        self.id_dropout = cfg.id_dropout
        self.fusion = cfg.fusion
        self.id_emb = nn.Embedding(n_items + 1, d, padding_idx=0) if cfg.item_id else None
        if self.id_emb is not None:
            nn.init.normal_(self.id_emb.weight, std=d**-0.5)
            with torch.no_grad():
                self.id_emb.weight[0].zero_()
        self.cat_emb = self.text_emb = self.dense_proj = None
        n_parts = int(cfg.item_id)
        if features is not None:
            if features.n_items != n_items:
                raise ValueError(f"item features cover {features.n_items} items but the data has {n_items}")
            if features.n_categories:
                self.cat_emb = nn.EmbeddingBag(features.n_categories + 1, d, mode="mean", padding_idx=0)
                n_parts += 1
            if len(features.text_values):
                self.text_emb = nn.EmbeddingBag(features.text_buckets + 1, d, mode="mean", padding_idx=0)
                n_parts += 1
            if features.dense is not None:
                self.dense_proj = nn.Linear(features.dense_dim, d)
                n_parts += 1
            for name in ("cat", "text"):  # CSR arrays travel with the module (device) but are not parameters
                self.register_buffer(f"{name}_offsets", torch.as_tensor(getattr(features, f"{name}_offsets")),
                                     persistent=False)
                self.register_buffer(f"{name}_values", torch.as_tensor(getattr(features, f"{name}_values")),
                                     persistent=False)
            if features.dense is not None:
                self.register_buffer("dense", torch.as_tensor(features.dense), persistent=False)
        if not cfg.item_id and n_parts == 0:
            raise ValueError("item_id = false (a content-only item tower) needs item features (categories, ngrams, "
                             "text or vectors); without them an item has no vector")
        if cfg.id_dropout > 0 and n_parts == 1:
            raise ValueError("id_dropout > 0 needs item features (title/categories/dense); without them an item "
                             "whose ID is dropped has no vector. Pass item_features or set id_dropout = 0")
        self.fuse = (nn.Sequential(nn.Linear(n_parts * d, d), nn.GELU(), nn.Linear(d, d))
                     if cfg.fusion == "concat" and n_parts > 1 else None)

    @property
    def has_features(self) -> bool:
        return any(m is not None for m in (self.cat_emb, self.text_emb, self.dense_proj))

    def forward(self, ids: torch.Tensor, id_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Vectors of ``ids`` (N,) -> (N, dim).

        ``id_mask`` (N,) float/bool multiplies the ID embedding: 0 gives the feature-only vector
        (cold items at inference; ID dropout in training draws it at random).
        """
        parts = []
        if self.id_emb is not None:
            id_part = self.id_emb(ids)  # (N, d)
            if self.training and self.id_dropout > 0:
                keep = (rng.rand(ids.shape, ids.device) >= self.id_dropout).to(id_part.dtype)
                id_part = id_part * keep[:, None]
            if id_mask is not None:
                id_part = id_part * id_mask.to(id_part.dtype)[:, None]
            parts.append(id_part)
        if self.cat_emb is not None:
            parts.append(self.cat_emb(*gather_bags(self.cat_offsets, self.cat_values, ids)))
        if self.text_emb is not None:
            parts.append(self.text_emb(*gather_bags(self.text_offsets, self.text_values, ids)))
        if self.dense_proj is not None:
            parts.append(self.dense_proj(self.dense[ids]))
        if self.fuse is not None:
            return self.fuse(torch.cat(parts, dim=-1))
        return torch.stack(parts).sum(0) if len(parts) > 1 else parts[0]
