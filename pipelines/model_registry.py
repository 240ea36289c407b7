"""Published bundles in the MLflow Model Registry, with the aliases ``candidate`` and ``champion``.

The bundle directory is logged as artifacts of the pipeline's parent run (``bundle/``) and a
model version is created from that artifact path; ``candidate`` points at the version under
review, ``champion`` at the one being served.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

CANDIDATE = "candidate"
CHAMPION = "champion"


def register_bundle(bundle: Path, name: str, run_id: str) -> str:
    """Log ``bundle`` under the run's ``bundle/`` artifacts and create a model version; returns the version.

    Idempotent per run: a version already created from this run's ``bundle/`` (a rerun after a kill
    between registration and the step's marker) is reused, its artifacts replaced by ``bundle``.
    """
    client = MlflowClient()
    client.log_artifacts(run_id, str(bundle), artifact_path="bundle")
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="recsys bundles published by the scheduled pipeline")
    source = f"{mlflow.get_run(run_id).info.artifact_uri}/bundle"
    existing = [v for v in client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
                if v.source == source]
    if existing:
        version = min(existing, key=lambda v: int(v.version))
        log.info("model version %s of %s already registered from run %s: reused", version.version, name, run_id)
    else:
        version = client.create_model_version(name, source=source, run_id=run_id, tags={"bundle": bundle.name})
    client.set_registered_model_alias(name, CANDIDATE, version.version)
    return str(version.version)


def promote(name: str, version: str) -> None:
    """Point ``champion`` at ``version``."""
    MlflowClient().set_registered_model_alias(name, CHAMPION, version)


def alias_version(name: str, alias: str) -> str | None:
    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None
