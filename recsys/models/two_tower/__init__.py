"""Two-tower retrieval model (item tower with side features; pooled or causal-Transformer user tower),
and ensembles of it."""

from recsys.models.two_tower.config import TwoTowerConfig
from recsys.models.two_tower.ensemble import TwoTowerEnsemble, TwoTowerEnsembleConfig
from recsys.models.two_tower.features import ItemFeatures
from recsys.models.two_tower.model import TwoTower

__all__ = ["ItemFeatures", "TwoTower", "TwoTowerConfig", "TwoTowerEnsemble", "TwoTowerEnsembleConfig"]
