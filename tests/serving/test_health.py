"""serving.health: /healthz and /readyz from a separate process fed by the workers' heartbeats."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from support import free_port, make_bundle, stop_server

from recsys.export import publish
from serving import health

REPO = Path(__file__).resolve().parents[2]


def _may_lower_nice() -> bool:
    """Whether a process here may lower its niceness (root or CAP_SYS_NICE): tried in a child."""
    code = "import os; os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) - 1)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def _priority_in_child(nice: int, deny: bool, out) -> None:
    if deny:
        def refuse(*_: object) -> None:
            raise PermissionError(1, "Operation not permitted")
        os.setpriority = refuse
    import logging
    import threading

    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    health.log.addHandler(handler)
    got = health.raise_priority(nice)
    inherited: list[int] = []
    t = threading.Thread(target=lambda: inherited.append(os.getpriority(os.PRIO_PROCESS, 0)))
    t.start()
    t.join()
    out.send((os.getpriority(os.PRIO_PROCESS, 0), got, inherited[0], seen))


@pytest.mark.parametrize("deny", [False, True])
def test_the_health_process_lowers_its_niceness_where_permitted_and_says_why_not(deny: bool) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    base = os.getpriority(os.PRIO_PROCESS, 0)
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_priority_in_child, args=(max(base - 3, -20), deny, send))
    child.start()
    own, got, thread, logged = recv.recv()
    child.join()
    if deny or not _may_lower_nice():
        assert own == got == thread == base
        assert len(logged) == 1 and "needs root or CAP_SYS_NICE" in logged[0]
    else:  # the process and the threads it starts after run at the lower niceness
        assert own == got == thread == max(base - 3, -20) and logged == []
    assert health.raise_priority(base) == base  # not lower than its own: nothing to do
    with pytest.raises(ValueError, match="-20-0"):
        health.raise_priority(5)


def test_health_and_readiness_from_heartbeat_files(tmp_path: Path) -> None:
    assert health.health(tmp_path)[0] == 503  # no worker yet: starting
    health.write_beat(tmp_path, True, "v001", None)
    assert health.health(tmp_path) == (200, {"status": "ok", "workers": 1, "pids": [os.getpid()]})
    assert health.readiness(tmp_path) == (200, {"status": "ready", "bundles": ["v001"]})
    beat = json.loads((tmp_path / str(os.getpid())).read_text())
    (tmp_path / str(os.getpid())).write_text(json.dumps({**beat, "t": time.monotonic() - 5}))
    status, body = health.health(tmp_path, stale_s=2.0)
    assert status == 503 and list(body["stale_workers"]) == [os.getpid()]
    health.write_beat(tmp_path, False, "v001", "loading v002 failed: bad bundle; still serving v001")
    status, body = health.readiness(tmp_path)
    assert status == 503 and "loading v002 failed" in body["problems"][os.getpid()]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / str(dead.pid)).write_text(json.dumps(beat))  # a worker that exited: its beat is dropped
    assert set(health.read_beats(tmp_path)) == {os.getpid()} and not (tmp_path / str(dead.pid)).exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_the_health_port_answers_and_reports_a_hung_event_loop(tmp_path: Path, workers: int) -> None:
    """A worker stopped with SIGSTOP (its event loop hung): the health port, another process, still answers at
    once and says 503 naming it; SIGCONT brings 200 back."""
    root = tmp_path / "root"
    publish(root, make_bundle(tmp_path / "b0", seed=0)[0], version="v000")
    port, hport = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "serving", str(root), "--port", str(port), "--workers",
                             str(workers), "--health-port", str(hport)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    probe = httpx.Client(base_url=f"http://127.0.0.1:{hport}", timeout=5)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            try:
                r = probe.get("/healthz")
                if r.status_code == 200 and r.json()["workers"] == workers:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "health port did not report every worker"
            time.sleep(0.2)
        assert probe.get("/readyz").json() == {"status": "ready", "bundles": ["v000"]}
        assert probe.get("/v1/recommend").status_code == 404
        pids = probe.get("/healthz").json()["pids"]
        assert len(pids) == workers and (workers > 1 or pids == [proc.pid])
        # the workers run at +WORKER_NICE, the health process (forked first) at HEALTH_NICE where it may lower its
        # niceness, else at the caller's
        base = os.getpriority(os.PRIO_PROCESS, 0)
        assert {os.getpriority(os.PRIO_PROCESS, p) for p in pids} == {min(base + health.WORKER_NICE, 19)}
        import psutil

        listening = [c for c in psutil.Process(proc.pid).children(recursive=True)
                     if any(conn.laddr.port == hport for conn in c.net_connections(kind="tcp"))]
        assert [c.nice() for c in listening] == [min(base, health.HEALTH_NICE) if _may_lower_nice() else base]
        hung = pids[0]
        os.kill(hung, signal.SIGSTOP)
        try:
            time.sleep(health.STALE_S + 1.0)
            t0 = time.perf_counter()
            r = probe.get("/healthz")
            assert time.perf_counter() - t0 < 1.0  # answered though a worker is frozen
            assert r.status_code == 503 and str(hung) in r.json()["stale_workers"]
        finally:
            os.kill(hung, signal.SIGCONT)
        deadline = time.monotonic() + 10
        while probe.get("/healthz").status_code != 200:
            assert time.monotonic() < deadline, "health did not come back after SIGCONT"
            time.sleep(0.2)
    finally:
        probe.close()
        stop_server(proc)



@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_the_health_process_ends_with_the_server(tmp_path: Path, how: signal.Signals) -> None:
    """However the server ends (SIGTERM, after which uvicorn re-raises the signal and no exit handler runs, or
    SIGKILL), its health process stops answering and exits, and the heartbeat folder is removed."""
    root = tmp_path / "root"
    publish(root, make_bundle(tmp_path / "b0", seed=0)[0], version="v000")
    port, hport = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "serving", str(root), "--port", str(port), "--health-port",
                             str(hport)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = httpx.Client(base_url=f"http://127.0.0.1:{hport}", timeout=2)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if probe.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the health port never answered 200"
            time.sleep(0.2)
        folders = {c for c in Path(tempfile.gettempdir()).glob("recsys-health-*")
                   if (c / str(proc.pid)).exists()}
        assert len(folders) == 1  # the worker's heartbeat lives there
        proc.send_signal(how)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 5
        while True:
            try:
                probe.get("/healthz")
            except httpx.TransportError:
                break  # nothing listens on the health port any more
            assert time.monotonic() < deadline, f"the health process outlived a server ended by {how.name}"
            time.sleep(0.1)
        assert not any(f.exists() for f in folders)
    finally:
        probe.close()
        if proc.poll() is None:
            proc.kill()
