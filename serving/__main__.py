"""``python -m serving PATH [--host H] [--port P] [--workers N] [--lookup-threads L] [--reload-interval S]
[--blas-threads T] [--health-port H] [--worker-nice N]``."""

from __future__ import annotations

import argparse
import os

from serving.health import HEALTH_NICE, KEEP_ALIVE_S, WORKER_NICE
from serving.http import run


def limit_blas_threads(n: int) -> None:
    """Cap BLAS threads: one query is a small matrix-vector product, and idle BLAS threads spinning
    on a busy machine cost more than they save (p99 of a 12k x 64 product: ~4 ms with 1 thread vs
    ~30 ms with 2 on a loaded 2-core box). Spawned uvicorn workers read the environment variables;
    this process is already running numpy, so threadpoolctl (when installed) caps it in place."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it only spawned workers get the cap
        return
    threadpool_limits(limits=n, user_api="blas")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m serving", description="Serve a bundle or a publish root over HTTP.")
    p.add_argument("path", help="bundle directory, or publish root whose `current` pointer is watched")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="server processes on the port (on Linux each with "
                   "its own SO_REUSEPORT socket, so connections spread over them; default 1)")
    p.add_argument("--lookup-threads", type=int, default=4, help="lookups at once per worker (default 4)")
    p.add_argument("--reload-interval", type=float, default=2.0, help="seconds between checks of `current`")
    p.add_argument("--blas-threads", type=int, default=1, help="BLAS threads per worker (default 1)")
    p.add_argument("--health-port", type=int, default=0, help="also answer /healthz and /readyz on this port, "
                   "from a separate process fed by the workers' heartbeats (0 = off)")
    p.add_argument("--worker-nice", type=int, default=WORKER_NICE, choices=range(20), metavar="0-19",
                   help="with --health-port: niceness added to the workers so the health process is scheduled "
                   f"first on saturated cores (default {WORKER_NICE}; 0 = same priority; up to 19 on a host that "
                   "serves only: on a shared host the workers then get little CPU against other jobs)")
    p.add_argument("--health-nice", type=int, default=HEALTH_NICE, choices=range(-20, 1), metavar="-20-0",
                   help="with --health-port: niceness the health process sets itself to where permitted (root or "
                   f"CAP_SYS_NICE), ahead of other processes on the host too (default {HEALTH_NICE}; 0 = the caller's)")
    p.add_argument("--keep-alive", type=float, default=KEEP_ALIVE_S, help="seconds an idle keep-alive connection "
                   f"stays open (default {KEEP_ALIVE_S:g}, uvicorn's; behind a load balancer, above its idle timeout)")
    p.add_argument("--log-level", default="info")
    a = p.parse_args(argv)
    limit_blas_threads(a.blas_threads)
    run(a.path, a.host, a.port, a.reload_interval, a.workers, a.log_level, a.lookup_threads, a.health_port,
        a.worker_nice, a.health_nice, a.keep_alive)


if __name__ == "__main__":
    main()
