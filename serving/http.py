"""HTTP front end: FastAPI app over a :class:`~serving.Recommender`, with hot reload of a publish root.

    run("bundles_root", port=8000)      # or: python -m serving bundles_root --port 8000

Endpoints: ``GET /v1/recommend?user_id=&k=``, ``POST /v1/recommend`` (``{"history": [...], "k": 10}``;
with ``"user_id"`` of a known user the history is that user's recent events, appended to their stored
history and encoded at request time),
``GET /v1/similar?item_id=&k=``, ``GET /v1/model``, ``GET /healthz``, ``GET /readyz``; docs at ``/docs``.
Lookups that can take long run in worker threads (at most ``lookup_threads`` at a time per process, the rest
wait), never on the event loop, so a slow lookup does not stall other requests or ``/healthz``. Each lookup is
priced first (:meth:`Recommender.expected_us`: the search as export timed it, a heavy user priced as exact
scoring, history encoding as the server timed it when it loaded the bundle); one priced at most
``INLINE_US`` (2 ms) runs inline, where the hand-off to a thread would cost more than it saves (the GIL
hand-offs of a thread doing many small numpy calls cost up to a millisecond a request). Lookups with
``exclude``/``allow`` lists, or that cannot be priced, always go to the pool. Work per request is
bounded: bodies of at most 64 KiB (411 without a Content-Length, so no chunked bodies), ``k`` and
``history`` at most 1000, ``allow`` at most 10,000 ids, and an index search of at most
:data:`serving.search.MAX_FETCH` candidates, past which a query is scored exactly (one pass over the
catalogue) however many items the user has seen.
Every 4xx/5xx body has one shape: ``{"error": {"code": ..., "message": ..., "field": ...}}``: caller
errors (invalid parameters, :class:`~serving.format.RequestError`) are 4xx; anything else is a 500 whose
message names only the exception type, with the traceback in the server log. No response carries a
server file-system path.

Health at saturation: with ``health_port``, a separate process answers ``/healthz`` and ``/readyz`` on that port
from heartbeats each worker's event loop writes (:mod:`serving.health`), so a probe never queues behind lookups.

Hot reload: when ``path`` is a publish root, a daemon thread polls its ``current`` pointer every
``reload_interval`` seconds and loads (and verifies) the bundle it names. On success the new
Recommender replaces the old one in a single reference swap; on failure the old bundle keeps
serving, the error is logged and ``/readyz`` answers 503 with the reason until a load succeeds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from serving import health
from serving.format import CURRENT, MAX_ID_LEN, BundleError, RequestError
from serving.recommender import Recommender

log = logging.getLogger("serving.http")
MAX_K = 1000
MAX_BODY_BYTES = 64 * 1024
_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 411: "length_required",
          413: "body_too_large", 422: "invalid_request", 500: "internal", 503: "not_ready"}

RawId = str | int


class HistoryRequest(BaseModel):
    """Recommendations for a request-time history: an anonymous user's, or a known user's recent events."""

    history: list[RawId] = Field(..., max_length=MAX_K, description="raw item ids, oldest first")
    k: int = Field(10, ge=1, le=MAX_K)
    user_id: RawId | None = Field(None, description="a known user: history = their recent events, added to the "
                                  "stored history; an unknown one: the history answers alone")
    exclude_seen: bool | None = Field(None, description="never return the stored history's or the history's items; "
                                      "omitted: the bundle's default (manifest exclude_seen)")
    exclude: list[RawId] = Field(default_factory=list, max_length=MAX_K)
    allow: list[RawId] | None = Field(None, max_length=10 * MAX_K)


def _dumps(content: object) -> bytes:
    return json.dumps(content, separators=(",", ":")).encode()


class JSON(Response):
    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return _dumps(content)


def error(status: int, message: str, field: str | None = None, code: str | None = None) -> JSON:
    return JSON({"error": {"code": code or _CODES.get(status, "error"), "message": message, "field": field}},
                status_code=status)


class BodyLimit:
    """Refuse bodies over MAX_BODY_BYTES before they are read (pure ASGI: no per-request task overhead)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            length = dict(scope["headers"]).get(b"content-length")
            resp = None
            if length is None:
                resp = error(411, "send a Content-Length header (chunked bodies are not accepted)")
            elif not length.isdigit() or int(length) > MAX_BODY_BYTES:
                resp = error(413, f"body of {length.decode()} bytes exceeds the {MAX_BODY_BYTES} byte limit", "body")
            if resp is not None:
                await resp(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _loaded(path: Path) -> Recommender:
    """Load and verify a bundle, and time its encoder here, so lookups can be priced (:func:`_light`)."""
    rec = Recommender.load(path)
    rec.calibrate_encoder()
    return rec


class State:
    """The serving Recommender plus hot-reload bookkeeping (read by handlers, written by the watcher)."""

    def __init__(self, path: str | Path, reload_interval: float) -> None:
        self.root = Path(path)
        self.watch = (self.root / CURRENT).is_symlink()
        self.rec = _loaded(self.root)  # fail fast: no bundle, no server
        self.loaded_target = self._target()
        self.error: str | None = None
        self._failed: str | None = None
        self.interval = reload_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _target(self) -> str | None:
        return os.readlink(self.root / CURRENT) if self.watch else None

    def check(self) -> None:
        """Load the bundle ``current`` names when it changed; keep the old one on failure."""
        target = self._target()
        if target == self.loaded_target:  # e.g. rolled back to what we serve: nothing failed any more
            self.error = self._failed = None
            return
        if target == self._failed:  # bundles are immutable: retry only when the pointer moves
            return
        try:
            rec = _loaded(self.root / target)
        except (BundleError, OSError, ValueError, KeyError) as exc:
            self._failed, self.error = target, f"loading {target} failed: {exc}; still serving {self.rec.path.name}"
            log.error("hot reload: %s", self.error)
            return
        self.rec, self.loaded_target, self.error, self._failed = rec, target, None, None
        log.info("hot reload: now serving %s", rec.path)

    def start(self) -> None:
        if self.watch and self.interval > 0:
            self._thread = threading.Thread(target=self._loop, name="bundle-reload", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except OSError as exc:  # e.g. the pointer is mid-replacement or gone: try again next tick
                log.warning("hot reload: cannot read %s: %s", self.root / CURRENT, exc)


def _answer(rec: Recommender, result) -> dict:
    return {**result.to_json(), "model": rec.manifest["model"], "bundle": rec.path.name}


def create_app(path: str | Path, reload_interval: float = 2.0, lookup_threads: int = 4,
               health_dir: str | None = None) -> FastAPI:
    """FastAPI app serving the bundle at ``path`` (a bundle dir, or a publish root that is watched).

    ``lookup_threads``: lookups running at once in this process (numpy and Annoy release the GIL).
    ``health_dir`` (default ``$SERVING_HEALTH_DIR``): where the event loop writes its heartbeat for the health
    listener (:mod:`serving.health`).
    """
    if lookup_threads < 1:
        raise ValueError(f"lookup_threads must be >= 1; got {lookup_threads}")
    state = State(path, reload_interval)
    pool = ThreadPoolExecutor(max_workers=lookup_threads, thread_name_prefix="lookup")
    health_dir = health_dir or os.environ.get("SERVING_HEALTH_DIR") or None

    async def beat() -> None:
        from serving.health import BEAT_S, write_beat

        while True:
            write_beat(health_dir, state.error is None, state.rec.path.name, state.error)
            await asyncio.sleep(BEAT_S)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        state.start()
        beating = asyncio.create_task(beat()) if health_dir else None
        yield
        if beating is not None:
            beating.cancel()
        state.stop()
        pool.shutdown(wait=False, cancel_futures=True)

    async def lookup(method: str, *args, light: bool = False, **kwargs) -> Response:
        """``Recommender.<method>(...)`` on the bundle served now; the answer names that bundle.

        A ``light`` lookup (priced by :func:`_light`) runs on the event loop: handing it to a thread would
        cost more than the lookup. Every other one runs and is rendered in a pool thread (at most
        ``lookup_threads`` at once, the rest queue), so the loop keeps answering meanwhile.
        """
        rec = state.rec

        def work() -> bytes:
            return _dumps(_answer(rec, getattr(rec, method)(*args, **kwargs)))

        if light:
            return Response(work(), media_type=JSON.media_type)
        body = await asyncio.get_running_loop().run_in_executor(pool, work)
        return Response(body, media_type=JSON.media_type)

    app = FastAPI(title="recsys serving", version="1", lifespan=lifespan, default_response_class=JSON)
    app.state.serving = state
    _install_errors(app)

    @app.get("/v1/recommend")
    async def recommend(user_id: str = Query(..., min_length=1, max_length=MAX_ID_LEN),
                        k: int = Query(10, ge=1, le=MAX_K), exclude_seen: bool | None = None) -> JSON:
        return await lookup("recommend", user_id, k, exclude_seen=exclude_seen, light=_light(state.rec, user_id, k))

    @app.post("/v1/recommend")
    async def recommend_history(body: HistoryRequest) -> JSON:
        light = not body.exclude and body.allow is None and _light(state.rec, body.user_id, body.k, len(body.history))
        if body.user_id is not None:
            return await lookup("recommend", body.user_id, body.k, body.exclude_seen, exclude=body.exclude,
                                allow=body.allow, history=body.history, light=light)
        return await lookup("recommend_for_history", body.history, body.k, body.exclude_seen,
                            exclude=body.exclude, allow=body.allow, light=light)

    @app.get("/v1/similar")
    async def similar(item_id: str = Query(..., min_length=1, max_length=MAX_ID_LEN),
                      k: int = Query(10, ge=1, le=MAX_K)) -> JSON:
        return await lookup("similar_items", item_id, k, light=_light(state.rec, None, k))

    @app.get("/v1/model")
    async def model() -> JSON:
        rec = state.rec
        return JSON({**rec.manifest, "bundle": rec.path.name})  # no server paths in responses

    @app.get("/healthz")
    async def healthz() -> JSON:
        return JSON({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> JSON:
        if state.error:
            return error(503, state.error, code="reload_failed")
        return JSON({"status": "ready", "bundle": state.rec.path.name})

    return app


INLINE_US = 2000.0  # a lookup priced at or under this many microseconds runs on the event loop


def _light(rec: Recommender, user_id: object | None, k: int, n_recent: int = 0) -> bool:
    """Whether a lookup is cheap enough for the event loop: :meth:`Recommender.expected_us` (the search as
    export timed it, a heavy user priced as exact scoring, encoding as the server timed it at load) is at most
    :data:`INLINE_US`. Unpriced lookups are never light."""
    try:
        us = rec.expected_us(user_id, k, n_recent)
    except Exception:  # pricing must never fail a request: the lookup itself reports its errors
        return False
    return us is not None and us <= INLINE_US


def _install_errors(app: FastAPI) -> None:
    app.add_middleware(BodyLimit)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSON:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        # drop the location kind and pydantic's union-member tags ("str", "int") from the field path
        loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "body", "str", "int")]
        if first.get("type") == "json_invalid" or not loc:
            loc = ["body"]
        return error(422, f"{'.'.join(loc)}: {first['msg']}", ".".join(loc))

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSON:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestError)
    async def bad_request(_request: Request, exc: RequestError) -> JSON:
        return error(400, str(exc))

    @app.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception) -> JSON:
        log.exception("unhandled error: %s", exc)
        return error(500, f"internal error ({type(exc).__name__}); see the server log")


def _app_from_env() -> FastAPI:
    """Factory for multi-worker uvicorn (each worker process builds its own app)."""
    return create_app(os.environ["SERVING_BUNDLE_PATH"], float(os.environ.get("SERVING_RELOAD_INTERVAL", "2.0")),
                      int(os.environ.get("SERVING_LOOKUP_THREADS", "4")))


def listen_sockets(host: str, port: int, n: int) -> list[socket.socket]:
    """``n`` listening sockets on ``host:port`` for ``n`` workers: one each with ``SO_REUSEPORT`` on Linux, else
    one shared by all (``port`` 0: the first socket's free port, for all of them).

    On one shared socket, whichever worker's event loop wakes first accepts every pending connection, so a burst
    of keep-alive clients can land all on one worker while the others idle (``bench_serving_10m.md`` records how
    the connections spread with a socket per worker). With a socket per worker in one ``SO_REUSEPORT`` group, the
    Linux kernel assigns each new connection to a socket by a hash of its addresses, so each worker gets its
    share. (macOS and the BSDs accept ``SO_REUSEPORT`` without spreading TCP connections, hence Linux only.)

    uvicorn binds with ``socket.socket(family)`` (proto 0), and asyncio only sets TCP_NODELAY on connections whose
    socket says IPPROTO_TCP; without it Nagle + delayed ACKs add ~40 ms to every keep-alive response. Naming the
    protocol here restores TCP_NODELAY in every worker.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    per_worker = n > 1 and sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")
    if per_worker:
        # a port another server holds must fail here, as with one socket: a SO_REUSEPORT group of the same user
        # would otherwise take this group in and split the port's connections between the two servers
        with socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP) as probe:
            probe.bind((host, port))
            port = probe.getsockname()[1]
    socks: list[socket.socket] = []
    try:
        for _ in range(n if per_worker else 1):
            sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if per_worker:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.set_inheritable(True)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks if per_worker else socks * n


def _run_workers(host: str, port: int, workers: int, log_level: str,
                 keep_alive: float = health.KEEP_ALIVE_S) -> None:
    """uvicorn's multi-process supervisor, each worker listening on its own socket (:func:`listen_sockets`)."""
    import uvicorn
    from uvicorn.supervisors.multiprocess import Multiprocess, Process

    class SlotWorkers(Multiprocess):
        """uvicorn's supervisor (>= 0.51) with one listening socket per worker slot: a worker started for slot i (at
        start, in place of a dead one, or by SIGHUP's restart) listens on slot i's socket. This process keeps every
        socket open, so connections the kernel assigns to a slot wait in its backlog while its worker restarts.
        ``restart_all`` and ``keep_subprocess_alive`` are uvicorn 0.51-0.54's, with the slot's socket."""

        def __init__(self, config: uvicorn.Config, slots: list[socket.socket]) -> None:
            super().__init__(config, sockets=[])
            self.slots = slots

        def _start(self, idx: int) -> Process:
            process = Process(self.config, [self.slots[idx]])
            process.start()
            return process

        def init_processes(self) -> None:
            self.processes = [self._start(idx) for idx in range(self.processes_num)]

        def restart_all(self) -> None:
            for idx, old in enumerate(self.processes):
                if self.should_exit.is_set():
                    return
                new = self._start(idx)
                if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                    new.kill()
                    new.join()
                    if not self.should_exit.is_set():
                        log.error("worker [%s] was not ready in time; keeping [%s]", new.pid, old.pid)
                    return
                old.terminate()
                old.join()
                self.processes[idx] = new

        def keep_subprocess_alive(self) -> None:
            from uvicorn.config import STARTUP_FAILURE

            for idx, process in enumerate(self.processes):
                if self.should_exit.is_set():
                    return
                if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                    continue
                process.kill()  # hung or dead
                process.join()
                if process.exitcode == STARTUP_FAILURE:  # the app or the socket is broken: a restart fails alike
                    log.error("worker [%s] failed to start; stopping", process.pid)
                    self.should_exit.set()
                    return
                if self.should_exit.is_set():
                    return
                log.info("worker [%s] died; restarting it on its socket", process.pid)
                self.processes[idx] = self._start(idx)

    config = uvicorn.Config("serving.http:_app_from_env", factory=True, host=host, port=port, workers=workers,
                            log_level=log_level, access_log=False, timeout_keep_alive=keep_alive)
    socks = listen_sockets(host, port, workers)
    log.info("serving on http://%s:%d with %d workers (%s)", host, socks[0].getsockname()[1], workers,
             "a SO_REUSEPORT socket each" if len(set(socks)) > 1 else "one shared socket")
    SlotWorkers(config, socks).run()


def run(path: str | Path, host: str = "127.0.0.1", port: int = 8000, reload_interval: float = 2.0,
        workers: int = 1, log_level: str = "info", lookup_threads: int = 4, health_port: int = 0,
        worker_nice: int = health.WORKER_NICE, health_nice: int = health.HEALTH_NICE,
        keep_alive: float = health.KEEP_ALIVE_S) -> None:
    """Serve ``path`` with uvicorn (blocks until interrupted).

    Parameters
    ----------
    path : a bundle folder, or a publish root whose ``current`` pointer is watched.
    host, port : where the main port listens.
    reload_interval : seconds between checks of ``current`` for a new bundle.
    workers : server processes sharing the port.
    log_level : uvicorn's and this module's log level.
    lookup_threads : lookups running at once in each worker.
    health_port : when not 0, a separate process answers ``/healthz`` and ``/readyz`` there from the workers'
        heartbeats (:mod:`serving.health`), however busy they are.
    worker_nice : with ``health_port``, the niceness added to this process and so to every worker (0-19):
        on cores the workers saturate, the kernel's scheduler then runs the health process first, so
        probes are answered in milliseconds. 0 keeps every process at the caller's priority.
    health_nice : with ``health_port``, the niceness the health process sets itself to where permitted (-20-0;
        root or ``CAP_SYS_NICE``), so it is also scheduled ahead of other processes at the caller's priority.
    keep_alive : seconds an idle keep-alive connection stays open (uvicorn's ``timeout_keep_alive``; 5 is its
        default); behind a load balancer, set it above the balancer's idle timeout.

    Raises
    ------
    ValueError : ``workers`` < 1, ``worker_nice`` outside 0-19, ``health_nice`` outside -20-0 or ``keep_alive`` <= 0.
    """
    import shutil
    import tempfile

    import uvicorn

    if workers < 1:
        raise ValueError(f"workers must be >= 1; got {workers}")
    if not keep_alive > 0:
        raise ValueError(f"keep_alive must be > 0 seconds; got {keep_alive}")
    if not 0 <= worker_nice <= 19:
        raise ValueError(f"worker_nice must be in 0-19 (a niceness added to the workers); got {worker_nice}")
    health.check_nice(health_nice)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    health_dir = None
    if health_port:
        from serving.health import start_health_process

        health_dir = tempfile.mkdtemp(prefix="recsys-health-")
        os.environ["SERVING_HEALTH_DIR"] = health_dir
        start_health_process(health_dir, host, health_port, nice=health_nice)  # forked before the workers' nice
        if worker_nice:
            os.nice(worker_nice)  # this process and every worker uvicorn starts from it
        log.info("health on http://%s:%d (/healthz, /readyz), at niceness %d where permitted; workers at niceness "
                 "+%d", host, health_port, health_nice, worker_nice)
    try:
        _serve(path, host, port, reload_interval, workers, log_level, lookup_threads, uvicorn, keep_alive)
    finally:
        if health_dir is not None:
            shutil.rmtree(health_dir, ignore_errors=True)


def _serve(path: str | Path, host: str, port: int, reload_interval: float, workers: int, log_level: str,
           lookup_threads: int, uvicorn, keep_alive: float = health.KEEP_ALIVE_S) -> None:
    if workers > 1:
        os.environ.update(SERVING_BUNDLE_PATH=str(path), SERVING_RELOAD_INTERVAL=str(reload_interval),
                          SERVING_LOOKUP_THREADS=str(lookup_threads))
        create_app(path, 0, lookup_threads)  # fail fast here on a bad bundle, not once per worker
        _run_workers(host, port, workers, log_level, keep_alive)
    else:
        uvicorn.run(create_app(path, reload_interval, lookup_threads), host=host, port=port, log_level=log_level,
                    access_log=False, timeout_keep_alive=keep_alive)
