"""What every report of ``experiments/`` records about where it ran, and the helpers the scripts share.

    with ReportRun(seeds=[42, 43, 44]) as run:   # command, commit (+dirty), machine, load average, wall time
        ...
    run.meta          # {"command", "commit", "dirty", "machine", "loadavg_start", "loadavg_end", "seconds", "seeds"}
    run.header()      # the same as Markdown lines for the report's header

    runs = [*old_runs, run.meta]; runs_header(runs)   # a report merged from several runs: one line per run
    legacy_runs(old_report)                            # the runs of a report from before the harness

    commit_now()      # "85cb124", or "85cb124+dirty" when tracked files outside experiments/reports changed
    free_port(); tree_rss_mb(pid); peak_rss_gb()
"""

from __future__ import annotations

import os
import platform
import resource
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def commit_now() -> str:
    """HEAD's short hash, ``+dirty`` when tracked files other than the reports (this harness's own output, which
    a run merges into) differ from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":(exclude)experiments/reports"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return head.stdout.strip() + ("+dirty" if dirty else "")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def machine() -> str:
    """Host, CPU, cores, torch's threads and whether the CPU computes bf16 natively (AVX512-BF16 or AMX)."""
    import torch

    sys.path.insert(0, str(REPO))
    from recsys.device import bf16_supported

    bf16 = "yes" if bf16_supported(torch.device("cpu")) else "no"
    return (f"{platform.node() or 'vm'} {platform.machine()} ({cpu_model()}), {os.cpu_count()} cores, "
            f"torch threads {torch.get_num_threads()}, CPU bf16 {bf16}")


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class ReportRun:
    """The facts a report states about its run: the command as typed, the commit and whether the tree was dirty,
    the machine, the load average at start and end, the seeds and the wall time (set when the block ends)."""

    def __init__(self, seeds: list[int] | None = None, argv: list[str] | None = None) -> None:
        script = Path(sys.argv[0]).resolve()
        shown = script.relative_to(REPO) if script.is_relative_to(REPO) else script
        args = sys.argv[1:] if argv is None else argv
        commit = commit_now()
        self.meta: dict[str, Any] = {"command": shlex.join(["python", str(shown), *args]),  # pastes into a shell
                                     "commit": commit.removesuffix("+dirty"), "dirty": commit.endswith("+dirty"),
                                     "machine": machine(), "seeds": seeds, "loadavg_start": loadavg()}
        self._t0 = time.perf_counter()

    def __enter__(self) -> ReportRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def finish(self) -> dict[str, Any]:
        """Record the end (load average, wall seconds); returns :attr:`meta`."""
        self.meta.update(loadavg_end=loadavg(), seconds=round(time.perf_counter() - self._t0, 1))
        return self.meta

    def header(self) -> list[str]:
        """Markdown lines naming the command, commit, machine, load and seeds."""
        return header_lines(self.meta)


def header_lines(m: dict[str, Any]) -> list[str]:
    """:meth:`ReportRun.header` from a recorded ``meta`` (a report rewritten from its JSON keeps its run's)."""
    seeds = f"; seeds {', '.join(map(str, m['seeds']))}" if m.get("seeds") else ""
    wall = f"; wall time {m['seconds']:.0f} s" if "seconds" in m else ""
    # a report from before the harness lacks some: shown as such, and the report test flags a missing commit
    commit = m.get("commit", "not recorded") + (" (with uncommitted changes)" if m.get("dirty") else "")
    end = f", {m['loadavg_end']} at end" if "loadavg_end" in m else ""
    command = f"`{m['command']}`" if m.get("command") else "not recorded"
    return [f"Command: {command}", "",
            f"Commit {commit}; machine: {m.get('machine', 'not recorded')}; "
            f"load average {m.get('loadavg_start', 'not recorded')} at start{end}{wall}{seeds}.",
            ""]


def runs_header(runs: list[dict[str, Any]]) -> list[str]:
    """Markdown for a report merged from several runs (oldest first): :func:`header_lines` of a single run, else
    a numbered list, one line per run, that the report's parts refer to as "run N"."""
    if len(runs) == 1:
        return header_lines(runs[0])
    lines = [f"Merged from {len(runs)} runs, oldest first (a part names the run that wrote it where that was "
             "recorded):", ""]
    for i, m in enumerate(runs, 1):
        command, _, facts, _ = header_lines(m)
        lines.append(f"{i}. {command}. {facts}")
    return [*lines, ""]


def legacy_runs(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs a report written before the harness records in its ``"; then "``-joined ``command``, ``commit``,
    ``machine`` and ``loadavg`` fields, as :attr:`ReportRun.meta` dicts (what was not recorded is left out).

    Those scripts only began to record the commit after some runs: their first merge wrote ``"?; then <hash>"``,
    so a leading ``"?"`` stands for every run before the first recorded hash.
    """
    if "runs" in report:
        return list(report["runs"])
    commands = str(report.get("command", "")).split("; then ")
    n = len(commands)

    def per_run(key: str) -> list[str | None]:
        values = str(report[key]).split("; then ") if report.get(key) is not None else [None]
        if len(values) == n:
            return list(values)
        if len(values) == 1:
            return values * n
        if values[0] == "?" and len(values) < n:
            return [None] * (n - len(values) + 1) + values[1:]
        return [None] * n  # cannot be matched to the runs: not claimed

    commits, machines, loads = per_run("commit"), per_run("machine"), per_run("loadavg")
    runs = []
    for command, commit, where, load in zip(commands, commits, machines, loads, strict=True):
        m: dict[str, Any] = {"command": command}
        if commit not in (None, "?"):
            m["commit"] = commit
        if where is not None:
            m["machine"] = where
        if load is not None:
            m["loadavg_start"] = load
        runs.append(m)
    return runs


def without_legacy_fields(report: dict[str, Any]) -> dict[str, Any]:
    """``report`` without the ``"; then "``-joined run fields of a report from before the harness (what
    :func:`legacy_runs` reads them into)."""
    return {k: v for k, v in report.items() if k not in ("commit", "command", "loadavg", "machine")}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` and all its children, in MB."""
    import psutil

    proc = psutil.Process(pid)
    return round(sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20, 1)


def peak_rss_gb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident memory of this process (or, with ``RUSAGE_CHILDREN``, of its largest waited-for child), GB."""
    return resource.getrusage(who).ru_maxrss / 2**20  # Linux: KiB
