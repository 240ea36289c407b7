"""Helpers shared by several test modules (bundles, clustered data, a real MLflow server): one home, so the
test folders can import them wherever they sit."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import scipy.sparse as sp

from pipelines.config import parse_run_config
from recsys.export import AnnConfig, export_bundle
from recsys.prepare.sequences import Sequences
from recsys.prepare.split import SplitData, leave_last_out

N_ITEMS, N_USERS, DIM = 300, 40, 16


EXACT_ANN = AnnConfig(n_trees=50, search_k_factors=(64,))


def make_bundle(dest: Path, seed: int = 0, metric: str = "dot", **kwargs) -> tuple[Path, dict]:
    """Random vectors, string item ids ``i<j>``, int user ids ``100 + j``; returns (bundle, arrays)."""
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(N_ITEMS + 1, DIM)).astype(np.float32)
    users = rng.normal(size=(N_USERS + 1, DIM)).astype(np.float32)
    items[0] = users[0] = 0
    rows = [[]] + [rng.choice(np.arange(1, N_ITEMS + 1), 8, replace=False).tolist() for _ in range(N_USERS)]
    seen = Sequences.from_lists(rows, n_items=N_ITEMS)
    item_ids = [f"i{j}" for j in range(1, N_ITEMS + 1)]
    user_ids = list(range(101, 101 + N_USERS))
    kwargs.setdefault("ann", EXACT_ANN)
    path = export_bundle(dest, items, users, item_ids, user_ids, seen, None, metric, "random", **kwargs)
    return path, {"items": items, "users": users, "seen": rows}


def exact(query: np.ndarray, items: np.ndarray, k: int, banned=()) -> list[str]:
    scores = items @ query
    scores[0] = -np.inf
    scores[list(banned)] = -np.inf
    return [f"i{j}" for j in np.argsort(-scores, kind="stable")[:k]]


def clustered(n_items: int, n_users: int, d: int = 16, topics: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(topics, d)).astype(np.float32)
    items = np.vstack([np.zeros((1, d)), centres[rng.integers(0, topics, n_items)]
                       + 0.4 * rng.normal(size=(n_items, d))]).astype(np.float32)
    users = np.vstack([np.zeros((1, d)), centres[rng.integers(0, topics, n_users)]
                       + 0.3 * rng.normal(size=(n_users, d))]).astype(np.float32)
    rows = np.repeat(np.arange(1, n_users + 1), 5)
    cols = rng.integers(1, n_items + 1, rows.size)
    seen = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(n_users + 1, n_items + 1))
    seen.sum_duplicates()
    return items, users, seen


N_CLUSTERS, PER_CLUSTER = 8, 15


def clustered_split(n_users: int = 600, length: int = 12, noise: float = 0.1, seed: int = 0) -> SplitData:
    """Users browse one cluster of items (Zipf-popular inside it); ``noise`` of the events are random items."""
    rng = np.random.default_rng(seed)
    n_items = N_CLUSTERS * PER_CLUSTER
    p = 1.0 / np.arange(1, PER_CLUSTER + 1)
    p /= p.sum()
    users, items = [], []
    for u in range(1, n_users + 1):
        c = rng.integers(N_CLUSTERS)
        seq = c * PER_CLUSTER + 1 + rng.choice(PER_CLUSTER, size=length, p=p)
        flip = rng.random(length) < noise
        seq[flip] = rng.integers(1, n_items + 1, size=flip.sum())
        users += [u] * length
        items += seq.tolist()
    enc = pl.DataFrame({"user_idx": users, "item_idx": items, "timestamp": np.arange(len(users))})
    return leave_last_out(enc, n_users, n_items)


SMALL = {"name": "tiny", "synthetic_users": 200, "synthetic_items": 80, "synthetic_events": 4000}


def run_config(model: dict, experiment: str = "t", name: str = "") -> object:
    raw = {"run": {"experiment": experiment, "name": name or model["name"], "seed": 3},
           "data": SMALL, "model": model, "eval": {"ks": [5, 10]}}
    return parse_run_config(raw, source="test")


def stop_server(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Interrupt a server process as Ctrl-C would; kill it if it has not ended within ``timeout`` seconds."""
    import signal

    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager


def mlflow_server(tmp_path: Path):
    """A real `mlflow server` on 127.0.0.1 (sqlite backend, proxied artifacts); yields (uri, store folder)."""
    port = free_port()
    store = tmp_path / "server"
    store.mkdir()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{store / 'server.db'}", "--artifacts-destination",
           (store / "artifacts").as_uri(), "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=store,
                            env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_mlflow(uri, proc)
        yield uri, store
    finally:
        mlflow.end_run()
        proc.terminate()
        proc.wait(timeout=30)


def wait_for_mlflow(uri: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"mlflow server at {uri} did not come up in {timeout} s")
