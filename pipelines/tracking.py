"""Everything MLflow: the embedded store by default, one run per training, FAILED on errors.

The tracking URI is ``$MLFLOW_TRACKING_URI`` when set, else ``sqlite:///mlruns.db`` in the
working directory with artifacts in ``./mlartifacts``. ``mlflow ui --backend-store-uri
sqlite:///mlruns.db`` shows the runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import RunStatus

log = logging.getLogger(__name__)

ARTIFACT_DIR = "mlartifacts"
PACKAGES = ("recsys", "torch", "polars", "numpy", "implicit", "annoy", "mlflow")


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` or the embedded sqlite store ``mlruns.db`` in the working directory.

    The sqlite path is made absolute: MLflow caches stores by URI, so a relative one would keep
    pointing at the first directory it was used in.
    """
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlruns.db'}"


def setup(experiment: str) -> str:
    """Point MLflow at the store and select (creating if needed) ``experiment``; returns its id."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        exp_id = found.experiment_id
    else:
        # Local stores keep artifacts beside the database; a server decides for itself.
        location = Path(ARTIFACT_DIR).resolve().as_uri() if uri.startswith("sqlite") else None
        exp_id = mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def git_commit() -> str:
    """The repository's HEAD commit, or ``unknown`` outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[f"version.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[f"version.{name}"] = "absent"
    out["version.python"] = platform.python_version()
    return out


@contextlib.contextmanager
def tracked_run(experiment: str, run_name: str, tags: dict[str, str] | None = None,
                nested: bool = False) -> Iterator[mlflow.ActiveRun]:
    """Start an MLflow run; an exception ends it FAILED with the error recorded, then re-raises."""
    if not nested:
        setup(experiment)
    base_tags = {"git_commit": git_commit(), **package_versions(), **(tags or {})}
    run = mlflow.start_run(run_name=run_name, tags=base_tags, nested=nested)
    try:
        yield run
    except BaseException as exc:
        mlflow.set_tag("error", f"{type(exc).__name__}: {exc}"[:5000])
        with contextlib.suppress(Exception):
            mlflow.log_text(f"{type(exc).__name__}: {exc}\n", "error.txt")
        mlflow.end_run(status=RunStatus.to_string(RunStatus.FAILED))
        raise
    else:
        mlflow.end_run(status=RunStatus.to_string(RunStatus.FINISHED))


def log_params(params: dict[str, Any]) -> None:
    """Log flattened params (values stringified, lists as JSON), in batches MLflow accepts."""
    clean = {k: json.dumps(v) if isinstance(v, list | tuple | dict) else v for k, v in params.items()}
    items = list(clean.items())
    for i in range(0, len(items), 90):
        mlflow.log_params(dict(items[i : i + 90]))


COUNTERS = ("n_users", "n_skipped", "n_masked_targets")  # evaluation counts: tags, not metric series


def log_metrics(metrics: dict[str, float], prefix: str, step: int | None = None) -> None:
    """Log ``{prefix}{name}`` metrics (e.g. ``val_ndcg_10``) at ``step``; evaluation counters (``n_users``, ...)
    become tags (``{prefix}{name}``), since they are counts, not figures to plot."""
    mlflow.log_metrics({f"{prefix}{k}": float(v) for k, v in metrics.items() if k not in COUNTERS}, step=step)
    counts = {f"{prefix}{k}": str(int(v)) for k, v in metrics.items() if k in COUNTERS}
    if counts:
        mlflow.set_tags(counts)


def log_json(payload: dict[str, Any], name: str) -> None:
    mlflow.log_dict(payload, name)


def log_file(path: Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifact(str(path), artifact_path=artifact_path)


EPOCH_VAL = "epoch_val_"  # per-epoch validation series; the final validation figures are ``val_*``


def epoch_logger():
    """An ``on_epoch_end(epoch, metrics)`` callback that logs every figure with ``step=epoch``.

    Validation metrics arrive prefixed ``val_`` (see :func:`recsys.evaluation.evaluator.make_validator`)
    and are logged as ``epoch_val_<name>``, so the per-epoch series never mixes with the final ``val_*`` and
    ``test_*`` figures of the run; every other figure (loss, seconds, learning rate) is logged as
    ``train_<name>``. Evaluation counters (users evaluated, ...) are left out. The logged rows are kept in
    ``on_epoch_end.history`` for the training-curve plot.
    """
    history: list[dict[str, float]] = []

    def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
        named = {}
        for k, v in metrics.items():
            if k.startswith("val_"):
                if k[4:] not in COUNTERS:
                    named[EPOCH_VAL + k[4:]] = float(v)
            else:
                named[k if k.startswith("train_") else f"train_{k}"] = float(v)
        mlflow.log_metrics(named, step=epoch)
        history.append({"epoch": epoch, **named})

    on_epoch_end.history = history  # type: ignore[attr-defined]
    return on_epoch_end


def scratch_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="recsys-mlflow-")


def end_orphaned_children(parent_run_id: str, reason: str) -> list[str]:
    """End the nested runs of ``parent_run_id`` still marked RUNNING as KILLED, tagged with ``reason``.

    A process killed inside a nested run (training a model) cannot end it; the resumed pipeline calls
    this before it opens new nested runs, so no run stays RUNNING forever. Returns the runs ended.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    stale = client.search_runs([parent.info.experiment_id],
                               filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and "
                                             "attributes.status = 'RUNNING'")
    for run in stale:
        client.set_tag(run.info.run_id, "ended_reason", reason)
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
    return [r.info.run_id for r in stale]


def latest_child(parent_run_id: str, run_name: str) -> str | None:
    """The run id of the newest nested run named ``run_name`` under ``parent_run_id`` (None without one)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
                              filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and "
                                            f"tags.mlflow.runName = '{run_name}'")
    return runs[0].info.run_id if runs else None


def supersede_children(parent_run_id: str, run_name: str, reason: str) -> list[str]:
    """Tag the finished nested runs named ``run_name`` under ``parent_run_id`` as superseded (``superseded``
    = ``reason``): a model trained again after a kill before its marker leaves one run that counts."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    done = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and "
                                            f"tags.mlflow.runName = '{run_name}'")
    for run in done:
        client.set_tag(run.info.run_id, "superseded", reason)
    return [r.info.run_id for r in done]
