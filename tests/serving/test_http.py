"""The HTTP server as a real uvicorn process on 127.0.0.1: queries, error shape, hot reload, shutdown."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from support import make_bundle, stop_server

from recsys.export import publish
from recsys.export.publish import point
from serving import Recommender

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(pred: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if pred():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("http")
    root = tmp / "root"
    publish(root, make_bundle(tmp / "b0", seed=0)[0], version="v000")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "serving", str(root), "--port", str(port),
                             "--reload-interval", "0.2"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
        _wait(lambda: proc.poll() is None and client.get("/healthz").status_code == 200, 30, "server start")
        yield {"client": client, "root": root, "tmp": tmp, "proc": proc}
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _error(resp: httpx.Response, status: int, field: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}
    assert body["error"]["field"] == field and body["error"]["message"]
    return body["error"]


def test_queries_match_the_in_process_recommender(server):
    c, rec = server["client"], Recommender.load(server["root"])
    got = c.get("/v1/recommend", params={"user_id": "101", "k": 5}).json()
    assert got["items"] == rec.recommend(101, k=5).items and got["source"] == "model" and got["bundle"] == "v000"
    assert c.get("/v1/recommend", params={"user_id": "nobody"}).json()["source"] == "popularity"
    hist = c.post("/v1/recommend", json={"history": ["i5", "i9", "ghost"], "k": 3}).json()
    assert hist["source"] == "history" and hist["unknown"] == ["ghost"]
    assert hist["items"] == rec.recommend_for_history(["i5", "i9"], k=3).items
    sim = c.get("/v1/similar", params={"item_id": "i7", "k": 4}).json()
    assert sim["items"] == rec.similar_items("i7", k=4).items
    assert c.get("/v1/model").json()["counts"]["items"] == 300
    assert c.get("/readyz").json() == {"status": "ready", "bundle": "v000"}
    assert "/v1/recommend" in c.get("/openapi.json").json()["paths"] and c.get("/docs").status_code == 200


def test_bad_input_gets_one_error_shape(server):
    c = server["client"]
    _error(c.get("/v1/recommend", params={"user_id": "101", "k": 0}), 422, "k")
    _error(c.get("/v1/recommend", params={"user_id": "101", "k": 1001}), 422, "k")
    _error(c.get("/v1/recommend", params={"user_id": "101", "k": "ten"}), 422, "k")
    _error(c.get("/v1/recommend"), 422, "user_id")
    _error(c.get("/v1/similar", params={"item_id": "x" * 300}), 422, "item_id")
    _error(c.post("/v1/recommend", json={"history": "i5"}), 422, "history")
    _error(c.post("/v1/recommend", json={"history": [[1]]}), 422, "history.0")
    _error(c.post("/v1/recommend", content=b"{not json", headers={"content-type": "application/json"}), 422, "body")
    big = {"history": ["i1"] * 20000}
    assert _error(c.post("/v1/recommend", json=big), 413, "body")["code"] == "body_too_large"
    assert _error(c.get("/nope"), 404)["code"] == "not_found"
    assert _error(c.delete("/v1/model"), 405)["code"] == "method_not_allowed"


def test_chunked_bodies_get_411_and_allow_exclude_work_over_http(server):
    c, rec = server["client"], Recommender.load(server["root"])
    chunked = c.post("/v1/recommend", content=iter([b'{"history": ', b'["i5"]}']),
                     headers={"content-type": "application/json"})
    assert "chunked" in chunked.request.headers.get("transfer-encoding", "")
    assert _error(chunked, 411)["code"] == "length_required"
    allow = [f"i{j}" for j in range(1, 60)]
    body = {"history": ["i5", "i9"], "k": 5, "exclude": ["i1", "i2", "i3"], "allow": allow}
    got = c.post("/v1/recommend", json=body).json()
    want = rec.recommend_for_history(["i5", "i9"], k=5, exclude=["i1", "i2", "i3"], allow=allow)
    assert got["items"] == want.items and set(got["items"]) <= set(allow) - {"i1", "i2", "i3", "i5", "i9"}
    known = c.post("/v1/recommend", json={**body, "user_id": 101}).json()
    assert known["source"] == "fresh"
    assert known["items"] == rec.recommend(101, 5, exclude=body["exclude"], allow=allow, history=["i5", "i9"]).items
    assert c.post("/v1/recommend", json={"history": [], "k": 3, "allow": []}).json()["items"] == []


def test_hot_reload_then_failed_reload_keeps_serving_then_shutdown(server):
    c, root, tmp, proc = server["client"], server["root"], server["tmp"], server["proc"]
    publish(root, make_bundle(tmp / "b1", seed=1)[0], version="v001")
    _wait(lambda: c.get("/v1/model").json()["bundle"] == "v001", what="reload to v001")
    expected = Recommender.load(root).recommend(101, k=5).items
    assert c.get("/v1/recommend", params={"user_id": "101", "k": 5}).json()["items"] == expected

    bad = root / "bundles" / "v002"
    shutil.copytree(root / "bundles" / "v001", bad)
    (bad / "item_vectors.npy").write_bytes((bad / "item_vectors.npy").read_bytes()[:-4])  # truncated copy
    point(root, "v002")
    _wait(lambda: c.get("/readyz").status_code == 503, what="readyz to report the failed reload")
    err = _error(c.get("/readyz"), 503)
    assert err["code"] == "reload_failed" and "v002" in err["message"] and "still serving v001" in err["message"]
    still = c.get("/v1/recommend", params={"user_id": "101", "k": 5}).json()
    assert still["bundle"] == "v001" and still["items"] == expected

    point(root, "v001")  # pointing back at the bundle being served clears the failure
    _wait(lambda: c.get("/readyz").status_code == 200, what="readyz to recover")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) == 0
    log = proc.stdout.read()
    assert "item_vectors.npy has" in log and "Shutting down" in log


def test_internal_errors_are_500_with_a_log_line_caller_errors_400_and_no_path_leaks(tmp_path, caplog):
    import logging

    from fastapi.testclient import TestClient

    from serving import RequestError
    from serving.http import create_app

    path = make_bundle(tmp_path / "b", seed=0)[0]
    app = create_app(path, reload_interval=0)
    rec = app.state.serving.rec

    def broken(*_a, **_k):
        raise ValueError(f"an internal invariant broke in {tmp_path}")

    def caller_mistake(*_a, **_k):
        raise RequestError("k must be an integer in 1..100000; got 0")

    with TestClient(app, raise_server_exceptions=False) as c:
        rec.recommend = broken  # an internal ValueError is the server's fault, not the caller's
        with caplog.at_level(logging.ERROR, logger="serving.http"):
            e = _error(c.get("/v1/recommend", params={"user_id": "101"}), 500)
        assert e["code"] == "internal" and "ValueError" in e["message"] and str(tmp_path) not in e["message"]
        assert "an internal invariant broke" in caplog.text  # the detail goes to the log only
        rec.recommend = caller_mistake
        assert "k must be" in _error(c.get("/v1/recommend", params={"user_id": "101"}), 400)["message"]
        model = c.get("/v1/model")
        assert model.status_code == 200 and "path" not in model.json() and str(tmp_path) not in model.text


@pytest.mark.parametrize("request_kind", ["history", "slow-search"])
def test_lookups_that_can_take_long_run_off_the_event_loop(tmp_path, request_kind):
    """A lookup that blocks until /healthz has answered: on the event loop it would deadlock."""
    import threading

    from fastapi.testclient import TestClient

    from serving.http import create_app

    app = create_app(make_bundle(tmp_path / "b", seed=0)[0], reload_interval=0)
    rec = app.state.serving.rec
    method = "recommend_for_history" if request_kind == "history" else "recommend"
    original, started, release = getattr(rec, method), threading.Event(), threading.Event()

    def slow(*args, **kwargs):
        started.set()
        release.wait(30)
        return original(*args, **kwargs)

    setattr(rec, method, slow)
    if request_kind == "slow-search":  # export timed this bundle's search far above the inline budget
        rec.manifest["search_options"][rec.search]["us_per_query"] = 50_000.0
    else:  # the server timed this bundle's encoder far above it
        rec._encode_cost = (1, 50_000.0)

    def heavy_request(c):
        if request_kind == "history":
            return c.post("/v1/recommend", json={"history": ["i5", "i9"], "k": 3}).status_code
        return c.get("/v1/recommend?user_id=101").status_code

    answers: dict[str, int] = {}
    with TestClient(app) as c:
        heavy = threading.Thread(target=lambda: answers.update(heavy=heavy_request(c)))
        heavy.start()
        try:
            assert started.wait(10), "the lookup never started"
            probe = threading.Thread(target=lambda: answers.update(health=c.get("/healthz").status_code))
            probe.start()
            probe.join(10)
            assert answers.get("health") == 200, "/healthz did not answer while a lookup was running"
            assert "heavy" not in answers
        finally:
            release.set()
            heavy.join(30)
    assert answers["heavy"] == 200


def test_only_lookups_priced_cheap_run_inline(tmp_path):
    from serving import search
    from serving.http import INLINE_US, _light

    rec = Recommender.load(make_bundle(tmp_path / "b", seed=0)[0])
    timed = rec.manifest["search_options"][rec.search]["us_per_query"]
    assert timed <= INLINE_US and _light(rec, 101, 10) and _light(rec, None, 10)  # a 300-item catalogue
    assert _light(rec, "nobody", 10)  # unknown user: popularity, cheaper still
    rec.manifest["search_options"][rec.search]["us_per_query"] = INLINE_US * 10
    assert not _light(rec, 101, 10)
    rec.manifest["search_options"][rec.search]["us_per_query"] = timed
    assert not _light(rec, 101, 10, n_recent=3)  # encoding not timed yet: unpriced, so pooled
    events, us = rec.calibrate_encoder(samples=4, recent=3)
    assert events == 8 + 3 and us > 0  # make_bundle: 8 stored items a user
    assert rec.expected_us(101, 10, n_recent=3) == pytest.approx(timed + us)
    assert rec.expected_us(None, 10, n_recent=110) == pytest.approx(timed + us * 10)  # scaled by length
    assert _light(rec, 101, 10, n_recent=3) == (timed + us <= INLINE_US)
    rec._encode_cost = (events, INLINE_US)
    assert not _light(rec, 101, 10, n_recent=3) and not _light(rec, None, 10, n_recent=3)
    rec.search = "annoy"  # a search export did not time (an override): priced unknown, so pooled
    rec.manifest["search_options"].pop("annoy", None)
    assert not _light(rec, 101, 10)
    rec.manifest["search_options"] = {"annoy": {"us_per_query": 100.0}, "exact": {"us_per_query": 5000.0}}
    assert _light(rec, 101, 10)  # Annoy, timed cheap
    past = search.MAX_FETCH - len(rec.bundle.seen(1)) + 1  # k + seen items past the fetch cap: exact scoring
    assert rec.expected_us(101, past) == 5000.0 and not _light(rec, 101, past)


def _children(pid: int) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(pid).children()]


def test_two_workers_answer_concurrent_clients_identically(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    root = tmp_path / "root"
    publish(root, make_bundle(tmp_path / "b0", seed=3)[0], version="v000")
    rec = Recommender.load(root)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", str(root), "--port", str(port),
                             "--workers", "2", "--lookup-threads", "2"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=10) as probe:
            _wait(lambda: proc.poll() is None and probe.get("/healthz").status_code == 200, 30, "server start")
        _wait(lambda: len(_children(proc.pid)) >= 2, 20, "two worker processes")

        def client(n: int) -> list[tuple[int, list, list]]:
            out = []
            with httpx.Client(base_url=base, timeout=10) as c:
                for i in range(40):
                    user = 101 + (n * 40 + i) % 200
                    r = c.get("/v1/recommend", params={"user_id": str(user), "k": 5})
                    out.append((r.status_code, r.json()["items"], rec.recommend(user, k=5).items))
                    h = c.post("/v1/recommend", json={"history": [f"i{1 + i}", f"i{2 + n}"], "k": 4})
                    want = rec.recommend_for_history([f"i{1 + i}", f"i{2 + n}"], k=4).items
                    out.append((h.status_code, h.json()["items"], want))
            return out

        with ThreadPoolExecutor(8) as pool:
            results = [r for rs in pool.map(client, range(8)) for r in rs]
        assert len(results) == 640 and all(status == 200 for status, _, _ in results)
        assert all(got == want for _, got, want in results)
    finally:
        stop_server(proc)


def _worker_connections(server_pid: int, port: int) -> dict[int, int]:
    """{worker pid: established connections on ``port``} for the server's processes listening on it."""
    import psutil

    out = {}
    for p in psutil.Process(server_pid).children(recursive=True):
        tcp = p.net_connections(kind="tcp")
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in tcp):
            out[p.pid] = sum(c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port for c in tcp)
    return out


def test_keep_alive_sets_how_long_an_idle_connection_stays_open(tmp_path) -> None:
    import psutil

    from serving.http import run

    with pytest.raises(ValueError, match="keep_alive"):
        run(tmp_path, keep_alive=0)
    root = tmp_path / "root"
    publish(root, make_bundle(tmp_path / "b0", seed=3)[0], version="v000")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "serving", str(root), "--port", str(port), "--keep-alive", "1",
                             "--log-level", "warning"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def established() -> int:
        tcp = psutil.Process(proc.pid).net_connections(kind="tcp")
        return sum(c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port for c in tcp)

    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            _wait(lambda: _answers(client), 60, "answers")
            assert established() == 1  # the client's keep-alive connection, open after its answer
            _wait(lambda: established() == 0, 10, "the idle connection closed by the server after 1 s")
            assert client.get("/v1/recommend", params={"user_id": "101"}).status_code == 200  # a new one
    finally:
        stop_server(proc)


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/v1/recommend", params={"user_id": "101"}).status_code == 200
    except httpx.TransportError:
        return False


def test_listen_sockets_gives_each_worker_its_own_reuseport_socket_on_linux() -> None:
    from serving.http import listen_sockets

    socks = listen_sockets("127.0.0.1", 0, 3)
    try:
        ports = {s.getsockname()[1] for s in socks}
        assert len(socks) == 3 and len(ports) == 1 and 0 not in ports
        if sys.platform.startswith("linux"):
            assert len({id(s) for s in socks}) == 3
            assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in socks)
        else:
            assert len({id(s) for s in socks}) == 1
    finally:
        for s in set(socks):
            s.close()
    assert len(listen_sockets("127.0.0.1", 0, 1)) == 1
    # a port in use fails, as a single socket would, instead of joining another server's group
    for n in (1, 2):
        taken = listen_sockets("127.0.0.1", 0, 2)
        for s in taken:
            s.listen()  # as the workers do
        try:
            with pytest.raises(OSError):
                listen_sockets("127.0.0.1", taken[0].getsockname()[1], n)
        finally:
            for s in set(taken):
                s.close()
    with socket.create_server(("127.0.0.1", 0)) as busy, pytest.raises(OSError):
        listen_sockets("127.0.0.1", busy.getsockname()[1], 2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-worker SO_REUSEPORT sockets are Linux only")
def test_two_workers_share_a_burst_of_connections_and_a_killed_worker_is_replaced_on_its_socket(tmp_path):
    """16 keep-alive clients connecting at once: each of the 2 workers holds some of them, in each of 3 bursts
    (on one shared socket, the first worker to wake used to accept them all). A worker killed mid-service is
    replaced on its own socket, which the supervisor keeps open: every connection made meanwhile is answered."""
    import psutil

    root = tmp_path / "root"
    publish(root, make_bundle(tmp_path / "b0", seed=3)[0], version="v000")
    port = free_port()
    # --keep-alive 120: a burst's first connections stay open however long the replacement worker takes to start
    # (at uvicorn's default 5 s, a loaded CI machine closed one before it was counted)
    proc = subprocess.Popen([sys.executable, "-m", "serving", str(root), "--port", str(port), "--workers", "2",
                             "--keep-alive", "120", "--log-level", "warning"], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: len(_worker_connections(proc.pid, port)) == 2, 60, "two listening workers")
        with httpx.Client(base_url=base, timeout=10) as probe:
            _wait(lambda: probe.get("/v1/recommend", params={"user_id": "101"}).status_code == 200, 60, "answers")

        def burst() -> dict[int, int]:
            clients = [httpx.Client(base_url=base, timeout=30) for _ in range(16)]
            try:
                assert all(c.get("/v1/recommend", params={"user_id": "101"}).status_code == 200 for c in clients)
                return _worker_connections(proc.pid, port)
            finally:
                for c in clients:
                    c.close()

        for _ in range(3):
            held = burst()
            assert len(held) == 2 and sum(held.values()) == 16 and min(held.values()) >= 1, held
            _wait(lambda: sum(_worker_connections(proc.pid, port).values()) == 0, 20, "connections closed")
        victim = sorted(_worker_connections(proc.pid, port))[0]
        psutil.Process(victim).kill()
        held = burst()  # made while the victim's slot has no worker: they wait in its socket's backlog
        assert victim not in held and len(held) == 2 and sum(held.values()) == 16, held
    finally:
        stop_server(proc)
