"""Two-tower retrieval model (item tower with side features; pooled or causal-Transformer user tower)."""

from recsys.models.two_tower.config import TwoTowerConfig
from recsys.models.two_tower.features import ItemFeatures
from recsys.models.two_tower.model import TwoTower

__all__ = ["ItemFeatures", "TwoTower", "TwoTowerConfig"]
