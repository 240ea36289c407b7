"""Serve an exported bundle: ``Recommender.load(path).recommend(user_id, k)``.

Imports numpy and annoy only (never torch, mlflow, polars or recsys), so application code gets a
light dependency. ``serving.http`` adds the FastAPI app on top.
"""

from serving.format import BundleError, RequestError
from serving.recommender import Recommendation, Recommender

__all__ = ["BundleError", "Recommendation", "Recommender", "RequestError"]
