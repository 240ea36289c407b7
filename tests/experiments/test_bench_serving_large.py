"""experiments/bench_serving.py --only large: its exact reference and the whole run on a small catalogue."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments"))
import bench_serving  # noqa: E402


@pytest.mark.parametrize("chunk", [1000, 250, 7, 3])
def test_the_chunked_exact_reference_is_the_brute_force_top_k(chunk: int) -> None:
    rng = np.random.default_rng(0)
    items = rng.normal(size=(1001, 8)).astype(np.float32)  # 1,000 items: the last chunk may hold one
    queries = rng.normal(size=(30, 8)).astype(np.float32)
    banned = [rng.integers(1, 1001, 5) for _ in range(30)]
    got = bench_serving.exact_reference(items, queries, banned, 10, chunk=chunk)
    for i in range(30):
        s = items @ queries[i]
        s[0] = -np.inf
        s[banned[i]] = -np.inf
        assert got[i].tolist() == np.argsort(-s, kind="stable")[:10].tolist()


@pytest.mark.slow
def test_a_small_large_run_reports_zero_failures_across_a_reload(tmp_path: Path) -> None:
    bench_serving.main(["--only", "large", "--items", "60000", "--queries", "100", "--exact-queries", "10",
                        "--workers", "2", "--http-seconds", "2", "--http-repeats", "2", "--reload-seconds", "12",
                        "--out", str(tmp_path)])
    res = json.loads((tmp_path / "bench_serving_60k.json").read_text())["large"]
    assert res["search"] in res["search_options"] and res["paths"][res["search"]]["recall_at_10"] >= 0.9
    assert len(res["http"]) == 2 and all(h["failed"] == 0 for h in res["http"]) and res["reload"]["failed"] == 0
    # each worker listens on its own SO_REUSEPORT socket: both hold some of the 16 connections in every run
    assert all(len(h["connections_per_worker"]) == 2 and sum(h["connections_per_worker"]) == 16
               and min(h["connections_per_worker"]) >= 1 for h in res["http"])
    assert set(res["reload"]["bundles"]) == {"v1", "v2"}  # the workers moved to the new version under load
    assert res["reload"]["bundles"]["v2"]["last_s"] > res["reload"]["bundles"]["v1"]["last_s"]
