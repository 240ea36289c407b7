"""Health that answers at saturation: a listener in its own process, on its own port, fed by heartbeats.

Every server worker's event loop writes a heartbeat file (``<folder>/<pid>``: the loop's monotonic time, whether
a bundle is loaded and which, and the last reload error) every :data:`BEAT_S` seconds. A separate process, which
imports nothing but the standard library, answers ``GET /healthz`` and ``GET /readyz`` on ``health_port`` from
those files:

- ``/healthz``: 200 when every live worker's loop wrote a heartbeat within ``stale_s`` seconds (a loop that
  hangs stops writing), else 503 naming the stale workers. It never waits behind lookups: no event loop, no GIL
  shared with them, and a sleeping process is woken first by the kernel's scheduler.
- ``/readyz``: 200 when every live worker has a bundle loaded and no failed reload, else 503 with the reasons.

Two priorities keep it ahead on saturated cores: the workers run :data:`WORKER_NICE` above the caller's niceness,
and the health process lowers its own to :data:`HEALTH_NICE` where it may (root, or ``CAP_SYS_NICE``); elsewhere it
keeps the caller's and logs why. The second matters when other processes at the caller's priority (a load generator,
a batch job) share the cores: at the same weight as them a woken health process waits up to a scheduler tick
(``experiments/reports/load_http.md`` measures both).

Heartbeats of workers that exited are removed. The application's own ``/healthz`` and ``/readyz`` stay on the
main port; orchestrators should probe this one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BEAT_S = 0.25  # seconds between a worker's heartbeats
STALE_S = 2.0  # a heartbeat older than this marks its worker unhealthy
#: seconds an idle keep-alive connection to the main port stays open by default (uvicorn's own default)
KEEP_ALIVE_S = 5.0
WORKER_NICE = 5  # niceness added to the workers (0-19): on saturated cores the health process is scheduled first
HEALTH_NICE = -10  # niceness the health process sets itself to where permitted (-20-0): ahead of other processes too
log = logging.getLogger("serving.health")


def check_nice(nice: int) -> None:
    """ValueError unless ``nice`` is a niceness the health process may set itself to (-20-0)."""
    if not -20 <= nice <= 0:
        raise ValueError(f"health nice must be in -20-0 (a niceness the health process sets itself to); got {nice}")


def raise_priority(nice: int) -> int:
    """Lower this process's niceness to ``nice`` (-20-0) if that is lower than its own and permitted; returns the
    niceness it runs at. Call it before starting threads: Linux keeps a niceness per thread, and new threads take
    their creator's."""
    check_nice(nice)
    own = os.getpriority(os.PRIO_PROCESS, 0)
    if nice >= own:
        return own
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except PermissionError:
        log.warning("health process stays at niceness %d: lowering it to %d needs root or CAP_SYS_NICE; the "
                    "workers' own niceness still keeps it ahead of them", own, nice)
        return own
    return os.getpriority(os.PRIO_PROCESS, 0)


def write_beat(folder: str | Path, ready: bool, bundle: str | None, error: str | None) -> None:
    """One worker's heartbeat: ``<folder>/<pid>``, replaced atomically (readers never see half a beat)."""
    folder = Path(folder)
    tmp = folder / f".{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"t": time.monotonic(), "ready": ready, "bundle": bundle, "error": error}))
    os.replace(tmp, folder / str(os.getpid()))


def read_beats(folder: str | Path) -> dict[int, dict]:
    """The heartbeats of live workers by pid (those of exited workers are removed)."""
    beats = {}
    for p in Path(folder).iterdir():
        if not p.name.isdigit():
            continue
        pid = int(p.name)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            p.unlink(missing_ok=True)
            continue
        except PermissionError:
            pass
        try:
            beats[pid] = json.loads(p.read_text())
        except (OSError, ValueError):  # replaced or removed between listing and reading: next probe sees it
            continue
    return beats


def health(folder: str | Path, stale_s: float = STALE_S) -> tuple[int, dict]:
    """(status, body) of ``/healthz``."""
    beats, now = read_beats(folder), time.monotonic()
    if not beats:
        return 503, {"status": "starting", "message": "no worker has written a heartbeat yet"}
    stale = {pid: round(now - b["t"], 2) for pid, b in beats.items() if now - b["t"] > stale_s}
    if stale:
        return 503, {"status": "unhealthy", "message": f"event loop silent for more than {stale_s} s",
                     "stale_workers": stale}
    return 200, {"status": "ok", "workers": len(beats), "pids": sorted(beats)}


def readiness(folder: str | Path) -> tuple[int, dict]:
    """(status, body) of ``/readyz``."""
    beats = read_beats(folder)
    problems = {pid: b.get("error") or "no bundle loaded" for pid, b in beats.items()
                if not b.get("ready") or b.get("error")}
    if not beats or problems:
        return 503, {"status": "not_ready", "workers": len(beats), "problems": problems}
    return 200, {"status": "ready", "bundles": sorted({b["bundle"] for b in beats.values()})}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a probe may reuse its connection
    # TCP_NODELAY: headers and body leave as two writes; with Nagle on, the body waits for the ACK of the
    # headers, which a keep-alive client delays by up to 40 ms (a load test without it: every probe ~45 ms)
    disable_nagle_algorithm = True
    folder: Path
    stale_s: float

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            status, body = health(self.folder, self.stale_s)
        elif path == "/readyz":
            status, body = readiness(self.folder)
        else:
            status, body = 404, {"error": {"code": "not_found", "message": f"{path}: this port answers /healthz "
                                           "and /readyz only", "field": None}}
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
        pass  # probes every few seconds would flood the log


def serve_health(folder: str | Path, host: str, port: int, stale_s: float = STALE_S,
                 stop: threading.Event | None = None, parent: int | None = None, nice: int | None = None) -> None:
    """Answer ``/healthz`` and ``/readyz`` on ``host:port`` from the heartbeats in ``folder`` (blocks; until
    ``stop`` is set when given, or, with ``parent``, until that process is gone: then ``folder`` is removed).
    With ``nice``, first :func:`raise_priority` to it (the calling thread and every thread the server starts)."""
    if nice is not None:
        raise_priority(nice)
    handler = type("Handler", (_Handler,), {"folder": Path(folder), "stale_s": stale_s})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    if stop is not None:
        threading.Thread(target=lambda: (stop.wait(), server.shutdown()), daemon=True).start()
    if parent is not None:
        threading.Thread(target=_end_with, args=(parent, server, Path(folder)), daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()


def _end_with(parent: int, server: ThreadingHTTPServer, folder: Path) -> None:
    """Stop ``server`` once ``parent`` is gone (re-parented: killed, or ended by a signal without its exit
    handlers), and remove the heartbeat folder it would have removed."""
    while os.getppid() == parent:
        time.sleep(0.25)
    shutil.rmtree(folder, ignore_errors=True)
    server.shutdown()


def start_health_process(folder: str | Path, host: str, port: int, stale_s: float = STALE_S,
                         nice: int | None = HEALTH_NICE):
    """:func:`serve_health` in a child process (forked: it starts at once and shares no GIL with the workers), at
    niceness ``nice`` where permitted (None: the caller's); returns the process. It ends with the server however
    the server ends: a daemon (ended at a normal exit) that also watches its parent, since a server killed, or
    ended by a re-raised SIGTERM as uvicorn does after a graceful shutdown, runs no exit handler."""
    import multiprocessing

    if nice is not None:
        check_nice(nice)
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=serve_health, args=(str(folder), host, port, stale_s, None, os.getpid(), nice),
                       name="recsys-health", daemon=True)
    proc.start()
    return proc
