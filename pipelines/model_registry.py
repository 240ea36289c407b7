"""Published bundles in the MLflow Model Registry, with the aliases ``candidate`` and ``champion``.

Each bundle is logged as an MLflow pyfunc model (``model`` of the pipeline's parent run; models-from-code,
:mod:`pipelines.bundle_model`: the bundle folder is the model's artifact, nothing is pickled) and a
model version is created from it; ``candidate`` points at the version under review, ``champion`` at the
one being served. So ``mlflow.pyfunc.load_model("models:/recsys@champion")`` and
``mlflow models serve -m models:/recsys@champion --env-manager local`` answer as :class:`serving.Recommender`
does on the same bundle.
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


MODEL_CODE = Path(__file__).with_name("bundle_model.py")
REQUEST_EXAMPLE_K = 10


def signature():
    """Requests: ``user_id`` (string), ``history`` (raw item ids) and ``k``, each optional; answers: ``items``,
    ``scores`` and ``source``."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    inputs = Schema([ColSpec("string", "user_id", required=False), ColSpec(Array("string"), "history", required=False),
                     ColSpec("long", "k", required=False)])
    outputs = Schema([ColSpec(Array("string"), "items"), ColSpec(Array("double"), "scores"),
                      ColSpec("string", "source")])
    return ModelSignature(inputs, outputs)


def requirements() -> list[str]:
    """This package (at its installed version) and what serving a bundle imports."""
    from importlib import metadata

    names = ("recsys", "numpy", "annoy", "pandas", "mlflow")
    out = []
    for n in names:
        try:
            out.append(f"{n}=={metadata.version(n)}")
        except metadata.PackageNotFoundError:
            out.append(n)
    return out


def log_bundle_model(bundle: Path, run_id: str | None = None):
    """Log ``bundle`` as a pyfunc model named ``model`` (in run ``run_id`` when given); returns its ModelInfo."""
    import pandas as pd

    from serving import Recommender

    rec = Recommender.load(bundle, verify=False)  # ids for the input example only: no need to hash every file
    user = str(rec.bundle.users.ids[0]) if len(rec.bundle.users.ids) else None
    example = pd.DataFrame([{"user_id": user, "history": [str(i) for i in rec.bundle.items.ids[:2]],
                             "k": REQUEST_EXAMPLE_K}])
    kw = dict(name="model", python_model=str(MODEL_CODE), artifacts={"bundle": str(bundle)}, signature=signature(),
              input_example=example, pip_requirements=requirements())
    if run_id is None:
        return mlflow.pyfunc.log_model(**kw)
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        return mlflow.pyfunc.log_model(**kw)
    with mlflow.start_run(run_id=run_id, nested=active is not None):
        return mlflow.pyfunc.log_model(**kw)


def register_bundle(bundle: Path, name: str, run_id: str) -> str:
    """Log ``bundle`` as the run's pyfunc ``model`` and create a model version from it; returns the version.

    Idempotent per run: a version already created from this run (a rerun after a kill between
    registration and the step's marker) is reused.
    """
    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="recsys bundles published by the scheduled pipeline")
    existing = [v for v in client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
                if (v.tags or {}).get("bundle") == bundle.name]
    if existing:
        version = min(existing, key=lambda v: int(v.version))
        log.info("model version %s of %s already registered from run %s: reused", version.version, name, run_id)
    else:
        info = log_bundle_model(bundle, run_id)
        version = client.create_model_version(name, source=info.model_uri, run_id=run_id,
                                              tags={"bundle": bundle.name}, model_id=info.model_id)
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
