"""Config of the scheduled pipeline: ``[pipeline]``, ``[data]``, ``[models.<label>]`` tables, ``[eval]``.

Example (the shape of ``experiments/pipelines/nightly.toml``)::

    [pipeline]
    workdir = "runs/pipeline"     # run folders, lock, log files
    bundles = "bundles"           # published bundles + the `current` pointer
    metric = "ndcg_10"            # gate metric (validation picks the candidate, test gates it)
    tolerance = 0.002             # candidate may trail the champion by at most this much

    [data]                        # pipelines.config.DataConfig; path = a file or a folder of log files
    path = ""                     # "" = built-in synthetic data

    [models.als]                  # one table per model; `name` defaults to the table's label
    factors = 64

    [models.item2vec]
    dim = 64

Without ``--config`` the built-in :func:`default_config` runs (synthetic data and the models it
lists); that is what the README's main command does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.config import DataConfig, EvalConfig, resolve_data_path
from recsys.config import ConfigError, from_dict, load_toml


@dataclass
class PipelineSection:
    """Where the pipeline keeps its state and how it decides to publish."""

    name: str = "default"  # the pipeline's name: its MLflow parent runs and its bundles' subfolder
    experiment: str = "pipeline"  # MLflow experiment of the pipeline and model runs
    workdir: str = "runs/pipeline"  # run folders, lock, log state, champion.json (relative: to the working dir)
    bundles: str = "bundles"  # publish root: bundles/<name>/current is what serving loads
    keep: int = 5  # published bundles kept
    seed: int = 42  # data (synthetic set) and model seeds
    device: str = "auto"  # for every model without its own: CUDA when torch sees a GPU, else CPU
    metric: str = "ndcg_10"  # gate metric (validation picks the candidate, test gates it)
    tolerance: float = 0.002  # absolute: promote when candidate >= champion - tolerance
    publish: str = "best"  # "best" (by validation, see select_within_se) or a model label
    # "best" takes, among the models whose validation metric is within this many standard errors (over
    # users) of the highest, the one of lowest capacity (Model.capacity); 0 = simply the highest
    select_within_se: float = 1.0
    max_bad_fraction: float = 0.05  # ingest check: quarantined / read
    max_row_drop: float = 0.5  # ingest check: fraction of rows lost against the last run
    warm_start: bool = True  # keep id maps stable against the champion's data
    registered_model: str = "recsys"  # MLflow Model Registry name
    sample_users: int = 3  # sample recommendations printed at the end
    # catalogue file (item, title, categories, tags): its items the data does not know are exported with vectors
    # from their content by the trained item tower (two-tower models with features), without retraining
    catalogue: str = ""


@dataclass
class TuneSection:
    """Tuning on a schedule (``[tune]``): the ``models`` (labels) are tuned with ``recsys tune`` on the run's
    data when they have no study yet, when ``every_runs`` runs have passed since their last study, or when the
    log has grown by more than ``growth`` (a fraction of its events) since; the runs in between train with
    that study's best parameters."""

    models: list[str] = field(default_factory=list)  # model labels to tune; empty = no tuning
    trials: int = 20  # finished trials per study
    minutes: float = 0.0  # wall-clock budget per study (0 = none)
    every_runs: int = 0  # re-tune after this many runs (0 = not by count)
    growth: float = 0.0  # re-tune when the log's events grew by more than this fraction (0 = not by growth)
    storage: str = ""  # Optuna storage URL; empty = optuna.db beside the MLflow store
    metric: str = "ndcg_10"  # validation metric the studies maximise
    sampler: str = "tpe"  # tpe or gp (pipelines.tune.make_sampler)
    refine: float | None = None  # share of the trials spent last on coordinate moves; None = 2/3 (pipelines.tune)


@dataclass
class ModelEntry:
    """One ``[models.<label>]`` table: the model's registered ``name``, its config ``params`` and the pipeline's
    own key for it, ``max_minutes`` (the fit's time budget; 0 = none)."""

    label: str
    name: str
    params: dict[str, Any]
    max_minutes: float = 0.0


@dataclass
class PipelineConfig:
    pipeline: PipelineSection = field(default_factory=PipelineSection)  # [pipeline]: workdir, gate, publishing
    data: DataConfig = field(default_factory=DataConfig)  # [data]: the log, its cleaning, split and engine
    models: list[ModelEntry] = field(default_factory=list)  # [[models]]: the candidates trained each run
    eval: EvalConfig = field(default_factory=EvalConfig)  # [eval]: cut-offs, history exclusion, batch size
    tune: TuneSection = field(default_factory=TuneSection)  # [tune]: the optional search before training
    source: str = "<built-in defaults>"  # the TOML file it was read from, for error messages


TABLES = ("pipeline", "data", "models", "eval", "tune")


def parse_pipeline_config(raw: dict[str, Any], source: str = "<dict>") -> PipelineConfig:
    """Validate a parsed TOML mapping; unknown tables/keys are errors that name the valid ones."""
    unknown = sorted(set(raw) - set(TABLES))
    if unknown:
        raise ConfigError(f"unknown table(s) {unknown} in {source}; valid tables are {list(TABLES)}")
    models = []
    for label, table in raw.get("models", {}).items():
        if not isinstance(table, dict):
            raise ConfigError(f"{source} [models.{label}] must be a table of model parameters")
        params = dict(table)
        budget = params.pop("max_minutes", 0.0)
        if isinstance(budget, bool) or not isinstance(budget, int | float) or budget < 0:
            raise ConfigError(f"{source} [models.{label}] max_minutes must be a number of minutes >= 0 (0 = no "
                              f"budget); got {budget!r}")
        models.append(ModelEntry(label, params.pop("name", label), params, float(budget)))
    if not models:
        raise ConfigError(f"{source} defines no model: add at least one [models.<label>] table (e.g. [models.als])")
    cfg = PipelineConfig(
        pipeline=from_dict(PipelineSection, raw.get("pipeline", {}), where=f"{source} [pipeline]"),
        data=from_dict(DataConfig, raw.get("data", {}), where=f"{source} [data]"),
        models=models,
        eval=from_dict(EvalConfig, raw.get("eval", {}), where=f"{source} [eval]"),
        tune=from_dict(TuneSection, raw.get("tune", {}), where=f"{source} [tune]"),
        source=source,
    )
    labels = [m.label for m in models]
    unknown_tuned = sorted(set(cfg.tune.models) - set(labels))
    if unknown_tuned:
        raise ConfigError(f"{source} [tune] models = {unknown_tuned} are not model labels; use some of {labels}")
    t = cfg.tune
    if t.sampler not in ("tpe", "gp"):
        raise ConfigError(f"{source} [tune]: sampler must be tpe or gp; got {t.sampler!r}")
    if t.refine is not None and (isinstance(t.refine, bool) or not isinstance(t.refine, int | float)
                                 or not 0 <= t.refine < 1):
        raise ConfigError(f"{source} [tune]: refine is a share of the trials in [0, 1); got {t.refine!r}")
    if t.trials < 1 or t.minutes < 0 or t.every_runs < 0 or t.growth < 0:
        raise ConfigError(f"{source} [tune]: trials must be >= 1 and minutes, every_runs, growth >= 0; got "
                          f"{t.trials}, {t.minutes}, {t.every_runs}, {t.growth}")
    se = cfg.pipeline.select_within_se
    if isinstance(se, bool) or not isinstance(se, int | float) or not 0 <= se < float("inf"):
        raise ConfigError(f"{source} [pipeline] select_within_se must be a number of standard errors >= 0 (0 = "
                          f"publish the highest validation metric); got {se!r}")
    if cfg.pipeline.publish != "best" and cfg.pipeline.publish not in labels:
        raise ConfigError(f"{source} [pipeline] publish = {cfg.pipeline.publish!r} is not a model label; "
                          f"use \"best\" or one of {labels}")
    return cfg


def load_pipeline_config(path: str | Path) -> PipelineConfig:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"pipeline config {p} does not exist; see experiments/pipelines/ for examples")
    cfg = parse_pipeline_config(load_toml(p), source=str(p))
    if cfg.data.path:
        cfg.data.path = str(resolve_data_path(cfg.data.path, p.parent))
    return cfg


def default_config() -> PipelineConfig:
    """The built-in run: a synthetic log; popularity, ALS, item2vec and a Transformer two-tower; minutes on 2 cores."""
    raw = {
        "pipeline": {"name": "default"},
        "data": {"name": "synthetic", "synthetic_users": 3000, "synthetic_items": 1000,
                 "synthetic_events": 120_000},
        "models": {
            "popularity": {"name": "popularity"},
            "als": {"name": "als", "factors": 32, "iterations": 10, "validate_every": 5},
            "item2vec": {"name": "item2vec"},  # the library defaults, as the shipped pipeline configs
            # the Transformer tower on prefixes, as the shipped configs, small: early stopping and a budget
            "two_tower": {"name": "two_tower", "user_tower": "transformer", "windows": "prefix", "dim": 32,
                          "n_layers": 1, "epochs": 10, "patience": 2, "max_len": 30, "text_buckets": 5000,
                          "precision": "auto", "max_minutes": 2, "warm_epochs": 3},
        },
    }
    return parse_pipeline_config(raw, source="<built-in defaults>")
