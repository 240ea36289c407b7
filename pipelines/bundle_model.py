"""A published bundle as an MLflow pyfunc model, from code: no pickled object, the bundle is the artifact.

MLflow runs this file when it loads the model (``mlflow.pyfunc.load_model("models:/recsys@champion")``,
``mlflow models serve -m models:/recsys@champion --env-manager local``); :func:`log_bundle_model` logs it.
``predict`` takes a frame of requests, one a row, and answers each as :class:`serving.Recommender` does:

    user_id   string, optional   a known user: their stored vector; with ``history``: their recent events
    history   list of strings    raw item ids, oldest first (an anonymous user when ``user_id`` is empty)
    k         integer, optional  default 10

and returns one row per request: ``items`` (raw ids, best first), ``scores`` and ``source`` ("model",
"fresh", "history" or "popularity"), as in :class:`serving.Recommendation`.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd

from serving import Recommender

BUNDLE = "bundle"  # the artifact key of the bundle folder
DEFAULT_K = 10


def _present(value: object) -> bool:
    """Whether a cell holds a value (pandas gives None or NaN for a missing optional column value)."""
    if value is None:
        return False
    if isinstance(value, float):
        return value == value  # NaN is missing
    return not (isinstance(value, str) and value == "")


def answer(rec: Recommender, request: dict) -> dict:
    """One request (``user_id``, ``history``, ``k``) answered as the HTTP service answers it."""
    k = int(request["k"]) if _present(request.get("k")) else DEFAULT_K
    history = request.get("history")
    history = [str(x) for x in history] if history is not None and not isinstance(history, float) else None
    user = request.get("user_id")
    if _present(user):
        result = rec.recommend(str(user), k, history=history or None)
    elif history:
        result = rec.recommend_for_history(history, k)
    else:
        raise ValueError("each request needs a user_id, a non-empty history, or both")
    return {"items": [str(i) for i in result.items], "scores": result.scores, "source": result.source}


class BundleModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper over :class:`serving.Recommender`; the bundle comes in as the ``bundle`` artifact."""

    def load_context(self, context) -> None:
        self.rec = Recommender.load(Path(context.artifacts[BUNDLE]))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        rows = model_input.to_dict(orient="records") if isinstance(model_input, pd.DataFrame) else list(model_input)
        return pd.DataFrame([answer(self.rec, row) for row in rows], columns=["items", "scores", "source"])


mlflow.models.set_model(BundleModel())
