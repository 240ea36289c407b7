"""HTTP load test: mixed valid, malformed and oversized traffic against `recsys serve` on loopback.

The bundle: 100,000 clustered 64-d items and 20,000 users (the synthetic catalogue of
``bench_serving.py``), 20 seen items per user, plus one heavy user who has seen 10,000 items.
The server is ``recsys serve`` (``python -m pipelines.cli serve``) with 1, then 2 workers. A loopback
asyncio client keeps ``--concurrency`` connections busy with a weighted mix of requests:

    valid      GET /v1/recommend (a user), POST /v1/recommend (an anonymous history; a known user's recent
               events), GET /v1/similar, and in the heavy phase the heavy user (GET, and POST with recent
               events: their 10,000-item history is encoded at request time)
    malformed  bad k, missing or oversized ids, broken JSON, wrong types, unknown paths and methods
               (each with its expected 4xx)
    oversized  a 100 KB body (413) and a chunked body without Content-Length (411), each on its own
               connection

while a separate probe process (as an orchestrator's probe is: not behind the load generator's event loop) GETs
``/healthz`` every 20 ms over two keep-alive connections: on the health port (``recsys serve --health-port``: a
separate process answering from the workers' heartbeats) and on the main port (the application's own). Each
worker count runs two phases: the mix
without the heavy user, then the mix with it (``--seconds`` each). Reported: requests and errors per
kind (an error: a valid request not answered 200, any other request not answered its expected status,
or a connection failure), p50/p99 of the valid requests with and without the heavy user, the heavy
requests' own p99, ``/healthz`` p99 on each port while heavy requests run, and the server's RSS (all its processes)
at start and end. Client and server share the machine's cores, so latencies are upper bounds.

    python experiments/load_http.py                   # 60 s per phase, 1 and 2 workers, worker nice 0 and 5 (~10 min)
    python experiments/load_http.py --seconds 30 --worker-nice 5 --health-nice 0,-10  # health priority compared
    python experiments/load_http.py --seconds 5 --quick

Writes experiments/reports/load_http{,_quick}.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))

import harness  # noqa: E402
from bench_serving import _pct, get, post, synthetic  # noqa: E402
from harness import free_port, tree_rss_mb  # noqa: E402

from recsys import atomic  # noqa: E402
from recsys.export import export_bundle  # noqa: E402
from serving.format import MANIFEST  # noqa: E402
from serving.health import HEALTH_NICE, WORKER_NICE  # noqa: E402
from serving.http import MAX_BODY_BYTES  # noqa: E402
from serving.search import MAX_FETCH  # noqa: E402

HEAVY_USER = 1
VALID = ("get_user", "post_history", "post_fresh", "similar", "heavy")


# -- the bundle ------------------------------------------------------------------------------------
def build_bundle(work: Path, n_items: int, n_users: int, heavy_seen: int, dim: int) -> Path:
    """The synthetic catalogue with user 1's history replaced by ``heavy_seen`` distinct items."""
    items, users, seen = synthetic(n_items, n_users, dim)
    rng = np.random.default_rng(7)
    seen = seen.tolil()
    seen[HEAVY_USER, :] = 0
    seen[HEAVY_USER, rng.choice(np.arange(1, n_items + 1), heavy_seen, replace=False)] = 1
    seen = seen.tocsr()
    seen.eliminate_zeros()
    return export_bundle(work / "bundle", items, users, np.arange(1, n_items + 1), np.arange(1, n_users + 1), seen,
                         None, "dot", "load-synthetic", target_recall=0.95)


# -- traffic ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Req:
    kind: str
    data: bytes
    expect: int
    own_connection: bool = False  # bodies the server refuses unread: the connection is not reused


MALFORMED = [
    (get("/v1/recommend?user_id=5&k=0"), 422), (get("/v1/recommend?k=10"), 422),
    (get("/v1/recommend?user_id=5&k=ten"), 422), (get(f"/v1/similar?item_id={'x' * 300}"), 422),
    (post("/v1/recommend", {"history": "not-a-list"}), 422), (post("/v1/recommend", {"history": [[1, 2]]}), 422),
    (post("/v1/recommend", {"history": ["1"], "k": 5000}), 422), (get("/v1/nothing-here"), 404),
    (b"DELETE /v1/model HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 405),
    (b"POST /v1/recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
     b"Content-Length: 9\r\n\r\n{not json", 422),
]


def _oversized(rng: np.random.Generator) -> Req:
    if rng.random() < 0.5:
        body = json.dumps({"history": [str(i) for i in range(20_000)]}).encode()  # ~130 KB
        assert len(body) > MAX_BODY_BYTES
        return Req("oversized", b"POST /v1/recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                   b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body, 413, True)
    return Req("chunked", b"POST /v1/recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"his\r\n0\r\n\r\n", 411, True)


def make_request(rng: np.random.Generator, kind: str, n_items: int, n_users: int) -> Req:
    if kind == "get_user":
        return Req(kind, get(f"/v1/recommend?user_id={rng.integers(2, n_users + 1)}&k=10"), 200)
    if kind == "post_history":
        hist = [str(i) for i in rng.integers(1, n_items + 1, rng.integers(1, 31))]
        return Req(kind, post("/v1/recommend", {"history": hist, "k": 10}), 200)
    if kind == "post_fresh":
        hist = [str(i) for i in rng.integers(1, n_items + 1, 5)]
        return Req(kind, post("/v1/recommend", {"user_id": str(rng.integers(2, n_users + 1)), "history": hist,
                                                "k": 10}), 200)
    if kind == "similar":
        return Req(kind, get(f"/v1/similar?item_id={rng.integers(1, n_items + 1)}&k=10"), 200)
    if kind == "heavy":
        if rng.random() < 0.5:
            return Req(kind, get(f"/v1/recommend?user_id={HEAVY_USER}&k=10"), 200)
        hist = [str(i) for i in rng.integers(1, n_items + 1, 5)]
        return Req(kind, post("/v1/recommend", {"user_id": str(HEAVY_USER), "history": hist, "k": 10}), 200)
    if kind == "malformed":
        data, status = MALFORMED[rng.integers(len(MALFORMED))]
        return Req(kind, data, status)
    return _oversized(rng)


MIX = {"get_user": 0.40, "post_history": 0.15, "post_fresh": 0.10, "similar": 0.05, "heavy": 0.10,
       "malformed": 0.15, "oversized": 0.05}


@dataclass
class Tally:
    lat: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    statuses: dict[str, dict[int, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    samples: list[str] = field(default_factory=list)

    def record(self, kind: str, ns: int, status: int, expect: int) -> None:
        self.lat[kind].append(ns)
        self.statuses[kind][status] += 1
        if status != expect:
            self.errors[kind] += 1
            if len(self.samples) < 10:
                self.samples.append(f"{kind}: expected {expect}, got {status}")


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> tuple[int, bool]:
    """Send one request, read the whole response: (status, whether the server keeps the connection)."""
    writer.write(data)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(b":", 1) for h in lines[1:] if b":" in h)}
    await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return status, headers.get(b"connection", b"").lower() != b"close"


async def _client(port: int, seed: int, mix: dict[str, float], stop: float, tally: Tally, n_items: int,
                  n_users: int) -> None:
    rng = np.random.default_rng(seed)
    kinds, weights = list(mix), np.array(list(mix.values())) / sum(mix.values())
    conn = None
    while time.perf_counter() < stop:
        req = make_request(rng, kinds[rng.choice(len(kinds), p=weights)], n_items, n_users)
        t = time.perf_counter_ns()
        try:
            if req.own_connection:
                r, w = await asyncio.open_connection("127.0.0.1", port)
                status, _ = await _exchange(r, w, req.data)
                w.close()
            else:
                if conn is None:
                    conn = await asyncio.open_connection("127.0.0.1", port)
                status, keep = await _exchange(*conn, req.data)
                if not keep:
                    conn[1].close()
                    conn = None
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            status, conn = -1, None
            tally.samples.append(f"{req.kind}: {type(exc).__name__}: {exc}"[:200])
        tally.record(req.kind, time.perf_counter_ns() - t, status, req.expect)
    if conn is not None:
        conn[1].close()


SO_TIMESTAMPNS = 35  # Linux: the kernel's receive time (CLOCK_REALTIME, ns) of each read, as ancillary data


def _probe_once(sock: socket.socket) -> tuple[int, int, int]:
    """GET /healthz on a keep-alive connection: (status, ns until this process had the whole response, ns until
    the kernel received its last part). The second excludes the probe's own wait to be scheduled."""
    t_real, t = time.time_ns(), time.perf_counter_ns()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    buf, arrived = b"", t_real
    while True:
        data, ancillary, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(16))
        if not data:
            raise ConnectionError("the server closed the probe's connection")
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", value[:16])
                arrived = max(arrived, sec * 10**9 + nsec)
        buf += data
        head, sep, body = buf.partition(b"\r\n\r\n")
        if sep:
            lines = head.split(b"\r\n")
            length = next((int(h.split(b":", 1)[1]) for h in lines[1:] if h.lower().startswith(b"content-length:")),
                          0)
            if len(body) >= length:
                return int(lines[0].split()[1]), time.perf_counter_ns() - t, arrived - t_real


def _probe_process(ports: dict[str, int], seconds: float, out, every: float = 0.02) -> None:
    """In its own process, as an orchestrator's probe is (not behind the load generator's event loop): GET
    /healthz on each port in turn every ``every`` s over keep-alive connections; sends back
    ``{kind: [(ns, status), ...]}``, with ``<kind>@socket`` the same requests timed to the kernel's receipt of the
    response (:func:`_probe_once`)."""
    def connect(port: int) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        return sock

    socks = {kind: connect(port) for kind, port in ports.items()}
    res: dict[str, list[tuple[int, int]]] = {k: [] for kind in ports for k in (kind, f"{kind}@socket")}
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        for kind, sock in socks.items():
            t = time.perf_counter_ns()
            try:
                status, ns, at_socket = _probe_once(sock)
                res[f"{kind}@socket"].append((at_socket, status))
            except (OSError, ValueError, IndexError):
                status, ns = -1, time.perf_counter_ns() - t
                sock.close()
                socks[kind] = connect(ports[kind])
            res[kind].append((ns, status))
        time.sleep(every)
    for sock in socks.values():
        sock.close()
    out.send(res)
    out.close()


def _clients_process(port: int, mix: dict[str, float], concurrency: int, seconds: float, n_items: int,
                     n_users: int, seed: int, nice: int, out) -> None:
    """The load generator in its own process at niceness ``nice``: sends back its tally as plain dicts."""
    if nice:
        os.nice(nice)
    tally, stop = Tally(), time.perf_counter() + seconds

    async def clients() -> None:
        await asyncio.gather(*[_client(port, seed * 1000 + c, mix, stop, tally, n_items, n_users)
                               for c in range(concurrency)])

    asyncio.run(clients())
    out.send({"lat": dict(tally.lat), "errors": dict(tally.errors), "samples": tally.samples,
              "statuses": {k: dict(v) for k, v in tally.statuses.items()}})
    out.close()


def _phase(port: int, mix: dict[str, float], concurrency: int, seconds: float, n_items: int, n_users: int,
           seed: int, health_port: int = 0, client_nice: int = 0) -> Tally:
    """The clients for ``seconds`` (a process at ``client_nice``); /healthz probed from another process (at this
    one's priority, as an orchestrator's probe) on the main port ("healthz_app") and, with ``health_port``, on
    the health listener's ("healthz")."""
    import multiprocessing

    ports = {"healthz_app": port, **({"healthz": health_port} if health_port else {})}
    ctx = multiprocessing.get_context("spawn")
    probes_in, probes_out = ctx.Pipe(duplex=False)
    load_in, load_out = ctx.Pipe(duplex=False)
    prober = ctx.Process(target=_probe_process, args=(ports, seconds, probes_out), daemon=True)
    load = ctx.Process(target=_clients_process, args=(port, mix, concurrency, seconds, n_items, n_users, seed,
                                                      client_nice, load_out), daemon=True)
    prober.start()
    load.start()
    got, probes = load_in.recv(), probes_in.recv()
    load.join(timeout=30)
    prober.join(timeout=30)
    tally = Tally()
    tally.samples = got["samples"]
    for kind, values in got["lat"].items():
        tally.lat[kind] = values
    for kind, n in got["errors"].items():
        tally.errors[kind] = n
    for kind, statuses in got["statuses"].items():
        tally.statuses[kind].update(statuses)
    for kind, rows in probes.items():
        for ns, status in rows:
            tally.record(kind, ns, status, 200)
    return tally


def summarise(tally: Tally, seconds: float) -> dict:
    lat = dict(tally.lat)
    valid_light = [x for k in VALID if k != "heavy" for x in lat.get(k, [])]
    valid_all = [x for k in VALID for x in lat.get(k, [])]
    kinds = {k: {"requests": len(v), "errors": tally.errors[k], **_pct(v),
                 "statuses": {str(s): n for s, n in sorted(tally.statuses[k].items())}}
             for k, v in sorted(lat.items())}
    return {"seconds": seconds, "requests": sum(len(v) for v in tally.lat.values()),
            "valid_errors": sum(tally.errors[k] for k in VALID),
            "invalid_unexpected": sum(tally.errors[k] for k in ("malformed", "oversized", "chunked")),
            "healthz_errors": tally.errors["healthz"] + tally.errors["healthz_app"],
            "valid_without_heavy": _pct(valid_light) if valid_light else None,
            "valid_all": _pct(valid_all) if valid_all else None,
            "heavy": _pct(lat["heavy"]) if lat.get("heavy") else None,
            "healthz": _pct(lat["healthz"]) if lat.get("healthz") else None,
            "healthz_socket": _pct(lat["healthz@socket"]) if lat.get("healthz@socket") else None,
            "healthz_app": _pct(lat["healthz_app"]), "kinds": kinds, "error_samples": tally.samples}


# -- the server ------------------------------------------------------------------------------------
def run_workers(bundle: Path, workers: int, a: argparse.Namespace, n_items: int, n_users: int,
                nice: int, client_nice: int = 0, health_nice: int = HEALTH_NICE) -> dict:
    port, hport = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", str(bundle), "--port", str(port),
                             "--workers", str(workers), "--lookup-threads", str(a.lookup_threads),
                             "--health-port", str(hport), "--worker-nice", str(nice),
                             "--health-nice", str(health_nice)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"recsys serve exited {proc.returncode}: {proc.stderr.read()[-2000:]}") from None
                time.sleep(0.1)
        while len(psutil.Process(proc.pid).children()) < (workers if workers > 1 else 0) + 1:  # + health
            time.sleep(0.1)
        _phase(port, MIX, a.concurrency, 2.0, n_items, n_users, seed=99)  # warm-up, not reported
        listening = [c for c in psutil.Process(proc.pid).children(recursive=True)
                     if any(conn.laddr.port == hport for conn in c.net_connections(kind="tcp"))]
        out = {"workers": workers, "worker_nice": nice, "client_nice": client_nice, "health_nice_asked": health_nice,
               "health_nice": listening[0].nice() - os.getpriority(os.PRIO_PROCESS, 0),
               "rss_start_mb": tree_rss_mb(proc.pid)}
        light = {k: v for k, v in MIX.items() if k != "heavy"}
        for name, mix, seed in (("without_heavy", light, 1), ("with_heavy", MIX, 2)):
            out[name] = summarise(_phase(port, mix, a.concurrency, a.seconds, n_items, n_users, seed, hport,
                                         client_nice), a.seconds)
            print(json.dumps({"workers": workers, "worker_nice": nice, "client_nice": client_nice, "phase": name,
                              **{k: out[name][k] for k in ("requests", "valid_errors", "invalid_unexpected",
                                                           "valid_without_heavy", "heavy", "healthz",
                                                           "healthz_socket", "healthz_app")}}), flush=True)
        out["rss_end_mb"] = tree_rss_mb(proc.pid)
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# -- report ----------------------------------------------------------------------------------------
def _config_cells(run: dict) -> str:
    """The first table cells of a run: workers, worker / client / health niceness."""
    return f"| {run['workers']} | {run['worker_nice']} | {run['client_nice']} | {run['health_nice']} |"


def markdown(res: dict) -> str:
    lines = [f"# HTTP load test{' (quick)' if res['quick'] else ''}", "",
             *harness.header_lines(res["meta"]),
             f"Bundle: {res['bundle']['items']:,} items, {res['bundle']['users']:,} users, dim {res['bundle']['dim']}, "
             f"candidate search `{res['bundle']['search']}`; the heavy user has seen {res['bundle']['heavy_seen']:,} "
             f"items (more than MAX_FETCH = {MAX_FETCH:,}, so their queries are scored exactly). Server: "
             f"`recsys serve --workers W --lookup-threads {res['lookup_threads']} --health-port H --worker-nice N "
             "--health-nice M` (N: the niceness added to the workers; M: the niceness the health process sets itself "
             "to, where permitted; the health nice column gives the one it ran at, relative to the caller's); the "
             "client runs at the client nice column, the probe process at the caller's; client: "
             f"{res['concurrency']} keep-alive connections, plus a separate probe process sending GET /healthz every "
             "20 ms to each of the health port and the main port; all on the same machine. /healthz p99 at the "
             "probe: until the probe process has the whole response; at the socket: until the kernel received it "
             "(SO_TIMESTAMPNS), which leaves out the probe process's own wait to be scheduled on the saturated "
             "cores.", "",
             "| workers | worker nice | client nice | health nice | phase | seconds | requests | errors (valid) | "
             "unexpected (invalid) | valid p50 ms | valid p99 ms | heavy p99 ms | /healthz p99 ms (health port, at "
             "the probe) | /healthz p99 ms (health port, at the socket) | /healthz p99 ms (main port) "
             "| RSS start MB | RSS end MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        for phase in ("without_heavy", "with_heavy"):
            x = r[phase]
            heavy = x["heavy"]["p99_ms"] if x["heavy"] else "-"
            lines.append(f"{_config_cells(r)} {phase.replace('_', ' ')} | {x['seconds']} | "
                         f"{x['requests']:,} | "
                         f"{x['valid_errors']} | {x['invalid_unexpected']} | {x['valid_without_heavy']['p50_ms']} | "
                         f"{x['valid_without_heavy']['p99_ms']} | {heavy} | {x['healthz']['p99_ms']} | "
                         f"{x['healthz_socket']['p99_ms']} | "
                         f"{x['healthz_app']['p99_ms']} | {r['rss_start_mb']} | {r['rss_end_mb']} |")
    lines += ["", "valid p50/p99: the valid requests other than the heavy user's, in each phase; RSS: all server "
              "processes (master and workers) before the first and after the last phase.", "",
              "## Requests by kind", "",
              "| workers | worker nice | client nice | health nice | phase | kind | requests | errors | p50 ms "
              "| p99 ms | statuses |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        for phase in ("without_heavy", "with_heavy"):
            for kind, x in r[phase]["kinds"].items():
                st = ", ".join(f"{s}: {n:,}" for s, n in x["statuses"].items())
                lines.append(f"{_config_cells(r)} {phase.replace('_', ' ')} | {kind} | "
                             f"{x['requests']:,} | "
                             f"{x['errors']} | {x['p50_ms']} | {x['p99_ms']} | {st} |")
    samples = [s for r in res["runs"] for p in ("without_heavy", "with_heavy") for s in r[p]["error_samples"]]
    lines += ["", "Errors seen: " + ("none" if not samples else "; ".join(samples[:10])), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="seconds per phase (default 60)")
    p.add_argument("--concurrency", type=int, default=16, help="client connections (default 16)")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    p.add_argument("--worker-nice", default=f"0,{WORKER_NICE}",
                   help=f"comma-separated `recsys serve --worker-nice` values, each run at every worker count "
                   f"(default 0,{WORKER_NICE}: the same priority as the health process, and the serving default)")
    p.add_argument("--client-nice", default="0",
                   help="comma-separated niceness of the load generator's process (default 0). Clients are remote "
                   "in production; here they share the server's cores, and at the probe's priority they delay the "
                   "probe too: the workers' niceness puts them beside the workers, below the probe and the health "
                   "process")
    p.add_argument("--health-nice", default=str(HEALTH_NICE),
                   help=f"comma-separated `recsys serve --health-nice` values (default {HEALTH_NICE}, the serving "
                   "default; 0 keeps the health process at the caller's priority)")
    p.add_argument("--lookup-threads", type=int, default=4)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--heavy-seen", type=int, default=10_000)
    p.add_argument("--quick", action="store_true", help="write the *_quick report")
    p.add_argument("--out", type=Path, default=REPO / "experiments" / "reports")
    a = p.parse_args(argv)
    run = harness.ReportRun(argv=sys.argv[1:] if argv is None else argv)
    run.meta["machine"] += f", {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, python {platform.python_version()}"
    res = {"quick": a.quick, "meta": run.meta, "concurrency": a.concurrency, "lookup_threads": a.lookup_threads,
           "runs": []}
    work = Path(tempfile.mkdtemp(prefix="load_http_"))
    try:
        bundle = build_bundle(work, a.items, a.users, a.heavy_seen, 64)
        manifest = json.loads((bundle / MANIFEST).read_text())
        res["bundle"] = {"items": a.items, "users": a.users, "dim": 64, "heavy_seen": a.heavy_seen,
                         "search": manifest.get("search", "annoy")}
        for nice in (int(x) for x in a.worker_nice.split(",")):
            for client_nice in (int(x) for x in a.client_nice.split(",")):
                for health_nice in (int(x) for x in a.health_nice.split(",")):
                    for w in (int(x) for x in a.workers.split(",")):
                        res["runs"].append(run_workers(bundle, w, a, a.items, a.users, nice, client_nice,
                                                       health_nice))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["meta"] = run.finish()
    stem = a.out / f"load_http{'_quick' if a.quick else ''}"
    a.out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(stem.with_suffix(".json"), json.dumps(res, indent=2))
    atomic.write_text(stem.with_suffix(".md"), markdown(res))
    print(markdown(res))
    bad = sum(r[p]["valid_errors"] + r[p]["invalid_unexpected"] + r[p]["healthz_errors"]
              for r in res["runs"] for p in ("without_heavy", "with_heavy"))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
