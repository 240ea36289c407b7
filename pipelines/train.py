"""`recsys train`: prepared data -> fit (validating every epoch) -> test -> one MLflow run.

The run records: params = the flattened config + the evaluation protocol; metrics ``train_*`` and
``epoch_val_*`` per epoch (``step=epoch``) and the final ``val_*`` / ``test_*`` once; tags = git commit,
data set name and fingerprint, device, package versions, the evaluation counters (``test_n_users``, ...)
and ``model_uri``; artifacts = the fitted model (``model/``, loadable from the run alone with
:func:`pipelines.run_model.load_run_model`), the config, ``metrics.json``, the training-curve PNG and, for
models with item vectors, an embedding map PNG. A run that raises ends FAILED with the error recorded
(see :func:`pipelines.tracking.tracked_run`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import polars as pl

from pipelines import plots, run_model, tracking
from pipelines.config import RunConfig
from pipelines.progress import chain, progress, time_budget, total_epochs
from pipelines.runstate import fault_point
from recsys import atomic
from recsys.config import from_dict, to_dict
from recsys.device import resolve_device
from recsys.evaluation.evaluator import EvalProtocol, evaluate_model, make_validator
from recsys.evaluation.sample import EvalPart, protocol_part
from recsys.models.base import Model
from recsys.models.registry import MODELS, build_model, check_model_config
from recsys.prepare import prepare
from recsys.prepare.format import Prepared, all_events, is_prepared, load_prepared, raw_items_meta
from recsys.prepare.split import SplitData

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What one training run produced."""

    run_id: str
    model_name: str
    model_dir: Path
    val: dict[str, float]
    test: dict[str, float]
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    stop_reason: str = "completed"  # "completed" (every epoch), or why fit ended early (a time budget)
    exclude_seen: bool = True  # whether val/test (and the bundle's lookups) leave a user's seen items out
    capacity: int = 0  # Model.capacity(): the pipeline prefers the lower among models level on validation

    def summary(self) -> str:
        keys = [k for k in ("hr_10", "ndcg_10", "hr_20", "ndcg_20", "mrr") if k in self.test]
        figures = "  ".join(f"test_{k}={self.test[k]:.4f}" for k in keys)
        stopped = "" if self.stop_reason == "completed" else f"; stopped: {self.stop_reason}"
        return f"{self.model_name} run {self.run_id}: {figures}  ({self.seconds:.1f} s fit+eval{stopped})"


def data_dir_for(cfg: RunConfig, root: Path) -> Path:
    """A prepared-data folder keyed by the data config and seed, so runs on the same data share it."""
    key = json.dumps({"data": to_dict(cfg.data), "seed": cfg.run.seed}, sort_keys=True, default=str)
    return root / f"{cfg.data.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def prepared_data(cfg: RunConfig, out: Path) -> Prepared:
    """Reuse the prepared folder for this data config when it exists, else build it."""
    d = data_dir_for(cfg, out / "data")
    if is_prepared(d):
        return load_prepared(d, cfg.data.name)
    return prepare(cfg.data, d, seed=cfg.run.seed)


def protocol_for(cfg: RunConfig, data: Prepared, exclude_seen: bool | None = None) -> EvalProtocol:
    """The evaluation protocol; ``exclude_seen`` overrides ``[eval] exclude_history`` (whose "auto" means
    "exclude" until a run has decided, see :func:`choose_exclusion`)."""
    exclude = cfg.eval.exclude_history if exclude_seen is None else exclude_seen
    sample = {"max_users": cfg.eval.max_users, "sample_seed": cfg.run.seed} if cfg.eval.max_users else {}
    return EvalProtocol(split=data.split.params.get("kind", cfg.data.split), ks=tuple(cfg.eval.ks),
                        exclude_history=exclude is not False, fingerprint=data.split.fingerprint, extra=sample)


def eval_parts(split: SplitData, protocol: EvalProtocol) -> tuple[EvalPart, EvalPart]:
    """The validation and test users ``protocol`` scores: all, or its ``max_users`` sample (same seed everywhere,
    so training, the test score and the gate score the same users)."""
    return (protocol_part(split.valid_history, split.valid_targets, protocol),
            protocol_part(split.test_history, split.test_targets, protocol))


def choose_exclusion(model: Model, part: EvalPart, protocol: EvalProtocol, auto: bool,
                     **kw) -> tuple[EvalProtocol, dict[str, float], dict[str, float]]:
    """Validation metrics under ``protocol``; with ``auto``, also with seen items kept in the ranking, and the
    protocol that scores higher NDCG at the first cut-off (ties exclude: on a log without repeat consumption
    excluding can only help). Returns (protocol, its validation metrics, NDCG of each rule)."""
    kw = {**kw, **part.kwargs()}
    val = evaluate_model(model, part.histories, part.targets, protocol, **kw)
    if not auto:
        return protocol, val, {}
    key = f"ndcg_{protocol.ks[0]}"
    keep_protocol = dataclasses.replace(protocol, exclude_history=False)
    keep = evaluate_model(model, part.histories, part.targets, keep_protocol, **kw)
    both = {f"val_{key}_exclude_seen": val[key], f"val_{key}_keep_seen": keep[key]}
    return (keep_protocol, keep, both) if keep[key] > val[key] else (protocol, val, both)


def train_run(cfg: RunConfig, out: str | Path, data: Prepared | None = None, nested: bool = False,
              echo: Callable[[str], None] | None = None) -> TrainResult:
    """Fit ``cfg``'s model on its data, evaluate it, and log everything to one MLflow run; with ``echo``, a
    progress bar over the epochs on a terminal, else a line per epoch (:func:`pipelines.progress.progress`)."""
    out = Path(out)
    device = resolve_device(cfg.run.device)
    check_model_config(cfg.model_name, cfg.model, device, where=f"{cfg.source} [model]")  # before the data step
    data = data or prepared_data(cfg, out)
    protocol = protocol_for(cfg, data)
    split = data.split
    tags = {"data_name": data.name, "data_fingerprint": split.fingerprint, "device": str(device),
            "model": cfg.model_name}
    with tracking.tracked_run(cfg.run.experiment, cfg.run.name, tags=tags, nested=nested) as run:
        auto = cfg.eval.exclude_history == "auto"
        decided = {"eval_exclude_history": "auto"} if auto else {}  # the decision is a tag, after the fit
        tracking.log_params({**cfg.flat(), **protocol.as_dict(), **decided, **_split_params(split.params)})
        params = {"seed": cfg.run.seed, **cfg.model}
        model = build_model(cfg.model_name, params, device, **model_inputs(cfg.model_name, params, data))
        kw = {"device": device, "batch_size": cfg.eval.batch_size}
        valid, test_part = eval_parts(split, protocol)
        validator = make_validator(valid.histories, valid.targets, protocol, **kw, **valid.kwargs())
        on_epoch = tracking.epoch_logger()
        t0 = time.perf_counter()
        total = total_epochs(getattr(model, "config", None))
        shown = progress(cfg.run.name, total, echo) if echo is not None else None
        budget = time_budget(cfg.run.max_minutes) if cfg.run.max_minutes > 0 else None
        try:
            model.fit(split.train, on_epoch_end=chain(on_epoch, shown, budget), validate=validator)
        finally:
            if shown is not None:
                shown.close()
        fit_s = time.perf_counter() - t0
        stop_reason = getattr(model, "stopped", None) or "completed"
        mlflow.set_tag("stop_reason", stop_reason)
        if echo is not None and stop_reason != "completed":
            echo(f"  [{cfg.run.name}] stopped: {stop_reason}")
        protocol, val, rules = choose_exclusion(model, valid, protocol, auto, **kw)
        mlflow.set_tag("exclude_seen", str(protocol.exclude_history).lower())
        if rules:
            tracking.log_metrics(rules, "")
        test = evaluate_model(model, test_part.histories, test_part.targets, protocol, **kw, **test_part.kwargs())
        seconds = time.perf_counter() - t0
        tracking.log_metrics(val, "val_")
        tracking.log_metrics(test, "test_")
        tracking.log_metrics({"fit_seconds": fit_s, "total_seconds": seconds}, "")
        model_dir = out / "models" / run.info.run_id
        model.save(model_dir)
        atomic.write_json(model_dir / run_model.MANIFEST, run_model.manifest(cfg, split.fingerprint,
                                                                             protocol.exclude_history))
        fault_point(f"fitted-{cfg.run.name}")  # inside the nested MLflow run: a kill here leaves it RUNNING
        mlflow.log_artifacts(str(model_dir), run_model.ARTIFACT)
        mlflow.set_tag("model_uri", f"runs:/{run.info.run_id}/{run_model.ARTIFACT}")
        _log_artifacts(cfg, model, data, on_epoch.history, val, test, model_dir)
        log.info("%s: val %s test %s", cfg.run.name, _short(val), _short(test))
        return TrainResult(run.info.run_id, cfg.model_name, model_dir, val, test, seconds, on_epoch.history,
                           stop_reason, protocol.exclude_history, model.capacity())


def _run_model_data(uri: str, out: Path):
    """The model at ``uri``, its config and the prepared data it was trained on (rebuilt if absent)."""
    rm = run_model.load_run_model(uri)
    data = prepared_data(rm.cfg, Path(out))
    if data.split.fingerprint != rm.fingerprint:
        raise ValueError(f"{uri}: the data its config names now splits to fingerprint {data.split.fingerprint}, "
                         f"not the {rm.fingerprint} the model was trained and evaluated on; the log changed since")
    return rm, data


def evaluate_run_model(uri: str, out: str | Path, split: str = "test") -> dict[str, float]:
    """Evaluate the model logged at ``uri`` (``runs:/<id>/model``) as its run did; returns the metrics."""
    if split not in ("test", "valid"):
        raise ValueError(f"split must be 'test' or 'valid'; got {split!r}")
    rm, data = _run_model_data(uri, Path(out))
    device = resolve_device(rm.cfg.run.device)
    protocol = protocol_for(rm.cfg, data, rm.exclude_seen)
    valid, test = eval_parts(data.split, protocol)
    part = test if split == "test" else valid
    return evaluate_model(rm.model, part.histories, part.targets, protocol, device=device,
                          batch_size=rm.cfg.eval.batch_size, **part.kwargs())


def export_run_model(uri: str, dest: str | Path, out: str | Path, catalogue: str | Path | None = None,
                     content_cache: str | Path | None = None) -> Path:
    """Export the model logged at ``uri`` as a bundle at ``dest`` (the one export path, as the pipeline does).

    With ``catalogue`` (a file of items with title / categories / tags), its items the model does not know are
    added with vectors from their content (:mod:`recsys.export.extend`), without retraining."""
    from recsys.export import export_model
    from recsys.export.extend import export_with_catalogue

    rm, data = _run_model_data(uri, Path(out))
    kwargs = {"run_id": uri.split("/")[1] if uri.startswith("runs:/") else None, "item_meta": raw_items_meta(data)}
    if catalogue is not None:
        return export_with_catalogue(dest, rm.model, data.items.ids, data.users.ids, all_events(data), catalogue,
                                     cache_dir=content_cache, **kwargs)
    return export_model(dest, rm.model, data.items.ids, data.users.ids, histories=all_events(data), **kwargs)


def model_inputs(name: str, params: dict, data: Prepared) -> dict:
    """Side inputs a model's constructor takes: item features (the config's ``features``) for the two-tower models."""
    cls = MODELS[name]
    if not cls.takes_item_features:
        return {}
    from recsys.models.two_tower.content import build_item_features

    c = from_dict(cls.Config, params, where=f"model {name!r}")
    feats, sources = build_item_features(c, data.items_meta, data.split.n_items, data.items.ids.to_list())
    if feats is None:
        return {}
    if sources:
        counts = {s: sources.count(s) for s in sorted(set(sources))}
        log.info("item features %s for %d items; content from %s", list(c.features), len(sources), counts)
    return {"item_features": feats}


def _split_params(params: dict) -> dict:
    return {f"split.{k}": v for k, v in params.items() if not isinstance(v, dict | list)}


def _short(m: dict[str, float]) -> str:
    return " ".join(f"{k}={m[k]:.4f}" for k in ("hr_10", "ndcg_10") if k in m)


def _item_colour(data: Prepared, n_rows: int) -> tuple[np.ndarray, str]:
    """Main-category code per item when the data has categories, else log popularity in train."""
    meta = data.items_meta
    if meta is not None and "categories" in meta.columns:
        main = meta["categories"].list.first().fill_null("?")
        codes = np.full(n_rows, -1.0)
        codes[meta["item_idx"].to_numpy()] = main.cast(pl.Categorical).to_physical().to_numpy()
        return codes, "main category (code)"
    pop = np.bincount(data.split.train.items, minlength=n_rows)
    return np.log1p(pop), "log(1 + train count)"


def _log_artifacts(cfg: RunConfig, model: Model, data: Prepared, history: list[dict[str, float]],
                   val: dict[str, float], test: dict[str, float], model_dir: Path) -> None:
    """Config, metrics JSON, training curves and the embedding map, through a scratch folder."""
    with tracking.scratch_dir() as tmp:
        t = Path(tmp)
        cfg_path = t / "config.json"
        cfg_path.write_text(json.dumps({"source": cfg.source, **cfg.flat()}, indent=2, default=str))
        tracking.log_file(cfg_path)
        if cfg.source and Path(cfg.source).is_file():
            tracking.log_file(Path(cfg.source))
        (t / "metrics.json").write_text(json.dumps({"val": val, "test": test, "history": history}, indent=2))
        tracking.log_file(t / "metrics.json")
        curve = plots.training_curves(history, t / "training_curves.png", title=cfg.run.name)
        if curve is not None:
            tracking.log_file(curve)
        vecs = model.item_vectors()
        if vecs.shape[1] >= 2:
            colour, label = _item_colour(data, vecs.shape[0])
            plots.embedding_map(vecs, t / "embedding_map.png", colour, label)
            tracking.log_file(t / "embedding_map.png")
    mlflow.set_tag("model_dir", str(model_dir))
