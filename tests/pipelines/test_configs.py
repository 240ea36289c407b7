"""Every shipped run config parses and its [model] table is a valid config of its model."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config import load_run_config
from recsys.config import from_dict
from recsys.models.registry import MODELS

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "experiments" / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_run_config_is_valid(path: Path) -> None:
    cfg = load_run_config(path)
    assert cfg.model_name in MODELS, f"{path.name}: unknown model {cfg.model_name!r}"
    from_dict(MODELS[cfg.model_name].Config, cfg.model, where=f"{path.name} [model]")
