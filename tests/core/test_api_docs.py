"""The public API a user reads is documented where they read it: numpydoc Parameters (when the function takes
any), Returns (when it returns something) on the model contract, serving's public API and the ingest / prepare
entry points."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest

import serving
from recsys.ingest.readers import read_interactions
from recsys.models.base import Model
from recsys.prepare import load_prepared, prepare
from recsys.prepare.format import load_id_maps


def _public_methods(cls: type) -> dict[str, Callable]:
    out = {}
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(member, (classmethod, staticmethod)):
            member = member.__func__
        if inspect.isfunction(member):
            out[f"{cls.__name__}.{name}"] = member
    return out


API: dict[str, Callable] = {
    **_public_methods(Model),
    **{k: v for name in serving.__all__ if inspect.isclass(cls := getattr(serving, name))
       and not issubclass(cls, Exception) for k, v in _public_methods(cls).items()},
    "recsys.prepare.prepare": prepare, "recsys.prepare.load_prepared": load_prepared,
    "recsys.prepare.format.load_id_maps": load_id_maps, "recsys.ingest.readers.read_interactions": read_interactions,
}


def _missing_sections(fn: Callable) -> list[str]:
    doc = inspect.getdoc(fn) or ""
    sig = inspect.signature(fn)
    missing = []
    if [p for p in sig.parameters if p not in ("self", "cls")] and "Parameters\n----------" not in doc:
        missing.append("Parameters")
    returns = sig.return_annotation
    if returns not in (None, "None", inspect.Signature.empty) and not any(
            f"{s}\n{'-' * len(s)}" in doc for s in ("Returns", "Yields")):
        missing.append("Returns")
    return missing


def test_the_api_list_covers_the_contract_and_serving() -> None:
    assert {"Model.fit", "Model.recommend", "Model.encode_users", "Model.save", "Model.load",
            "Recommender.load", "Recommender.recommend", "Recommender.similar_items"} <= API.keys()


@pytest.mark.parametrize("name", sorted(API))
def test_every_public_function_of_the_api_has_numpydoc_parameters_and_returns(name: str) -> None:
    assert not _missing_sections(API[name]), f"{name}: docstring lacks {_missing_sections(API[name])}"
