"""Run configs: one TOML file with flat tables mapped 1:1 onto dataclasses.

Example (experiments/configs/beauty_als.toml)::

    [run]
    experiment = "beauty"
    name = "als"

    [data]
    name = "beauty"
    path = "../shared/data/iclrec-amazon/Beauty.txt"
    format = "seq-per-user"

    [model]
    name = "als"          # a key of recsys.models.registry.MODELS; the other keys go to its config
    factors = 128

    [eval]
    ks = [10, 20]

Relative data paths are resolved against the config file's folder first, then the working
directory. Unknown tables or keys are errors that name the valid ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from recsys.config import ConfigError, from_dict, load_toml
from recsys.prepare.config import DataConfig


@dataclass
class RunSection:
    """Where the run is logged and how it computes."""

    experiment: str = "default"  # MLflow experiment the run is logged to
    name: str = ""  # MLflow run name (default: the model's name)
    seed: int = 42  # the model's seed (unless [model] sets one) and the synthetic set's
    device: str = "auto"  # CUDA when torch sees a GPU, else CPU; "cuda", "cuda:1" or "cpu" force it
    # time budget of the fit in minutes (0 = none): training stops after the epoch that reaches it, with the
    # model's best validation checkpoint where it keeps one; the MLflow run's tag stop_reason says so
    max_minutes: float = 0.0


@dataclass
class EvalConfig:
    """The evaluation protocol."""

    ks: tuple[int, ...] = (10, 20)  # cut-offs of HR@k, NDCG@k and coverage; the first decides exclude_history = "auto"
    # leave a user's seen items out of the ranking: true, false, or "auto" = decided per log after the fit, on
    # validation NDCG at the first cut-off (ties exclude); the pipeline's bundle and serving follow the choice
    exclude_history: bool | Literal["auto"] = "auto"
    batch_size: int = 2048  # users scored at once (memory: batch x items floats)
    # score at most this many users per split, a sample drawn with the run's seed from the users with a target
    # (0 = every user); for logs of millions of users, where full ranking of all of them takes hours
    max_users: int = 0

    def __post_init__(self) -> None:
        if self.exclude_history not in (True, False, "auto"):
            raise ConfigError(f'[eval] exclude_history must be true, false or "auto"; got {self.exclude_history!r}')
        if isinstance(self.max_users, bool) or not isinstance(self.max_users, int) or self.max_users < 0:
            raise ConfigError(f"[eval] max_users must be a whole number of users >= 0 (0 = every user); got "
                              f"{self.max_users!r}")


@dataclass
class RunConfig:
    """A whole run: the four tables of the TOML file."""

    run: RunSection = field(default_factory=RunSection)  # [run]: experiment and run names, seed, device
    data: DataConfig = field(default_factory=DataConfig)  # [data]: the log, its cleaning, split and engine
    model_name: str = "popularity"  # [model] name: a key of recsys.models.registry.MODELS
    model: dict[str, Any] = field(default_factory=dict)  # [model] without name: that model's Config fields
    eval: EvalConfig = field(default_factory=EvalConfig)  # [eval]: cut-offs, history exclusion, batch size
    source: str = ""  # the TOML file it was read from ("" when built in code), for error messages

    def flat(self) -> dict[str, Any]:
        """Flattened ``table.key`` params for MLflow."""
        from recsys.config import to_dict

        out: dict[str, Any] = {}
        for prefix, section in (("run", self.run), ("data", self.data), ("eval", self.eval)):
            out.update({f"{prefix}.{k}": v for k, v in to_dict(section).items()})
        out["model.name"] = self.model_name
        out.update({f"model.{k}": v for k, v in self.model.items()})
        return out


TABLES = ("run", "data", "model", "eval")


def parse_run_config(raw: dict[str, Any], source: str = "<dict>") -> RunConfig:
    """Build a :class:`RunConfig` from a parsed TOML mapping; errors name the file and key."""
    unknown = sorted(set(raw) - set(TABLES))
    if unknown:
        raise ConfigError(f"unknown table(s) {unknown} in {source}; valid tables are {list(TABLES)}")
    model = dict(raw.get("model", {}))
    if "name" not in model:
        raise ConfigError(f"{source} [model] needs a `name` key (e.g. name = \"als\")")
    model_name = model.pop("name")
    cfg = RunConfig(
        run=from_dict(RunSection, raw.get("run", {}), where=f"{source} [run]"),
        data=from_dict(DataConfig, raw.get("data", {}), where=f"{source} [data]"),
        model_name=model_name,
        model=model,
        eval=from_dict(EvalConfig, raw.get("eval", {}), where=f"{source} [eval]"),
        source=source,
    )
    if not cfg.run.name:
        cfg.run.name = model_name
    return cfg


def load_run_config(path: str | Path) -> RunConfig:
    """Read and validate a run config file; relative data paths resolve against its folder."""
    p = Path(path)
    cfg = parse_run_config(load_toml(p), source=str(p))
    if cfg.data.path:
        cfg.data.path = str(resolve_data_path(cfg.data.path, p.parent))
    return cfg


def resolve_data_path(path: str, base: Path) -> Path:
    """``path`` as given if it exists, else relative to ``base`` (the config's folder) or the repo root."""
    candidates = [Path(path), base / path, base.parent / path, base.parent.parent / path]
    for c in candidates:
        if c.exists():
            return c.resolve()
    return Path(path)
