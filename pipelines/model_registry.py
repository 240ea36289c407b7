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
    """Log ``bundle`` under the run's ``bundle/`` artifacts and create a model version; returns the version."""
    client = MlflowClient()
    client.log_artifacts(run_id, str(bundle), artifact_path="bundle")
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="recsys bundles published by the scheduled pipeline")
    source = f"{mlflow.get_run(run_id).info.artifact_uri}/bundle"
    version = client.create_model_version(name, source=source, run_id=run_id,
                                          tags={"bundle": bundle.name})
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
