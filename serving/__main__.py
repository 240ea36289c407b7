"""``python -m serving PATH [--host H] [--port P] [--workers N] [--reload-interval S]``."""

from __future__ import annotations

import argparse

from serving.http import run


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m serving", description="Serve a bundle or a publish root over HTTP.")
    p.add_argument("path", help="bundle directory, or publish root whose `current` pointer is watched")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--reload-interval", type=float, default=2.0, help="seconds between checks of `current`")
    p.add_argument("--log-level", default="info")
    a = p.parse_args(argv)
    run(a.path, a.host, a.port, a.reload_interval, a.workers, a.log_level)


if __name__ == "__main__":
    main()
