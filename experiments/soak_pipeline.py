"""Soak test of the scheduled pipeline: consecutive runs on a growing log folder, SIGKILLs inside every
step, while a `recsys serve` process on the same publish root is queried without pause on loopback.

Each run adds the next day's log file (a time slice of one synthetic log from the built-in
generator) to the folder and runs `recsys pipeline run`; a run chosen for a kill is SIGKILLed and run
again (it resumes), until it ends. Each killed run aims at one step, the step with the fewest kills so far
(``pipelines.steps.STEPS``). A step whose median duration in the runs not killed is at least ``SHORT_S`` is
hit from outside: SIGKILL at a random instant within it, drawn up to that median (the run's ``state.json``
names the step running, polled every 2 ms). A shorter step (evaluate and publish last tens of ms) cannot be
hit that way, so the process kills itself at one of the step's crash-injection points, drawn at random
(``RECSYS_FAULT_POINT``, ``FAULT_POINTS``): the same SIGKILL, at an instant inside the step. The step the run
was really in is read back and counted; a run that never reaches the point (publish after a rejecting gate)
counts as a missed kill. After every
ended run `current`, champion.json, published.json, the registry alias and the run markers must
agree (`pipelines.status.consistency`), no MLflow run may be left RUNNING, and the server must have
answered every request. Writes ``experiments/reports/soak_pipeline.{json,md}``.

    python experiments/soak_pipeline.py --runs 40 --kill-fraction 0.6   # ~24 kills, >= 3 in every step
    python experiments/soak_pipeline.py --runs 3 --out /tmp/soak   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))

import harness  # noqa: E402
from harness import free_port  # noqa: E402

from pipelines.runstate import FAULT_ENV  # noqa: E402
from pipelines.steps import STEPS  # noqa: E402
from recsys import atomic  # noqa: E402
from recsys.sources.synthetic import SyntheticConfig, write  # noqa: E402

SHORT_S = 0.5  # a step shorter than this (median) is killed at a crash-injection point, not by the poll loop
#: the model labels of :data:`CONFIG`: every kind the shipped nightly config trains
MODELS = ("popularity", "als", "item2vec", "transformer")
#: pipelines.runstate.fault_point names inside each step
FAULT_POINTS = {"ingest": ("ingest-prepared", "ingest-committed"), "train": tuple(f"trained-{m}" for m in MODELS),
                "evaluate": ("evaluated",), "export": ("exported", "registered"), "gate": ("gated",),
                "publish": ("publish-placed", "publish-switched", "publish-promoted", "publish-recorded")}
POLL_S = 0.002  # the kill loop reads the run's state.json this often: gate and publish last tens of ms
PYFUNC_USERS = 20  # known users the pyfunc champion is asked about after every ended run
CONFIG = """# written by experiments/soak_pipeline.py: experiments/pipelines/nightly.toml with small models
[pipeline]
name = "soak"
experiment = "pipeline-soak"
workdir = "wd"
bundles = "pub"
keep = {keep}
tolerance = {tolerance}
max_bad_fraction = 0.05

[data]
name = "soak"
path = "logs"
min_length = 3

[models.popularity]
name = "popularity"

[models.als]
factors = 16
iterations = 4

[models.item2vec]   # the library defaults, smaller and shorter
dim = 16
epochs = 2

[models.transformer]   # the nightly's Transformer two-tower, smaller and shorter (warm starts included)
name = "two_tower"
user_tower = "transformer"
dim = 16
max_len = 20
n_layers = 1
n_heads = 1
loss = "full"
windows = "prefix"
logq = "data"
n_uniform_negatives = 256
batch_size = 128
epochs = 2
warm_epochs = 1
"""


class Prober:
    """GET /v1/recommend for random known users (and /readyz) without pause; counts answers and failures."""

    def __init__(self, url: str, users: list[str], seed: int) -> None:
        self.url, self.users, self.rng = url, users, np.random.default_rng(seed)
        self.requests, self.errors, self.examples, self.bundles = 0, 0, [], set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        import httpx

        with httpx.Client(timeout=10) as client:
            n = 0
            while not self._stop.is_set():
                user = self.users[int(self.rng.integers(len(self.users)))]
                try:
                    r = client.get(f"{self.url}/v1/recommend", params={"user_id": user, "k": 10})
                    ok = r.status_code == 200 and len(r.json()["items"]) == 10
                    if n % 20 == 0:
                        ready = client.get(f"{self.url}/readyz")
                        ok = ok and ready.status_code == 200
                        self.bundles.add(client.get(f"{self.url}/v1/model").json()["bundle"])
                except Exception as exc:  # noqa: BLE001 - a transport error is an HTTP failure to report
                    ok, r = False, exc
                self.requests += 1
                n += 1
                if not ok:
                    self.errors += 1
                    if len(self.examples) < 5:
                        self.examples.append(repr(r)[:300] if not hasattr(r, "text") else r.text[:300])
                time.sleep(0.005)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def make_days(work: Path, days: int, events_per_day: int, seed: int) -> list[pl.DataFrame]:
    """One synthetic log (the built-in generator) cut into ``days + 1`` time slices; slice 0 is the history."""
    total = events_per_day * (days + 3)
    cfg = SyntheticConfig(n_users=max(total // 25, 200), n_items=max(total // 100, 100), n_events=total, seed=seed)
    gen = write(cfg, work / "generated", progress=False)
    frame = (pl.read_parquet(gen / "interactions" / "*.parquet").select("user", "item", "timestamp")
             .sort("timestamp"))
    shutil.rmtree(gen)
    bounds = [0, 3 * events_per_day] + [3 * events_per_day + i * events_per_day for i in range(1, days + 1)]
    bounds[-1] = frame.height
    return [frame.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def cli(args: list[str], cwd: Path, fault: str | None = None) -> subprocess.Popen:
    """``recsys ARGS`` in ``cwd``; with ``fault``, the process SIGKILLs itself at that crash-injection point."""
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


CHECK = """
import json, sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from pipelines import tracking
from pipelines.status import consistency

tracking.setup("pipeline-soak")
client = MlflowClient()
experiment = client.get_experiment_by_name("pipeline-soak")
running = [r.info.run_id for r in client.search_runs([experiment.experiment_id], max_results=5000)
           if r.info.status == "RUNNING"]
users = json.loads(sys.argv[1])
pyfunc = {"requests": 0, "errors": 0, "example": None}
if users:  # the champion as an MLflow pyfunc model, loaded from the registry alias, asked for each user's top 10
    try:
        import mlflow
        import pandas as pd

        model = mlflow.pyfunc.load_model("models:/recsys@champion")
        out = model.predict(pd.DataFrame({"user_id": users, "history": [[] for _ in users], "k": [10] * len(users)}))
        pyfunc["requests"] = len(users)
        pyfunc["errors"] = sum(len(items) != 10 for items in out["items"])
    except Exception as exc:  # noqa: BLE001 - every failure is a finding to report
        pyfunc.update(requests=len(users), errors=len(users), example=repr(exc)[:300])
print(json.dumps([consistency(Path("wd"), Path("pub"), "recsys"), running, pyfunc]))
"""


def check(work: Path, users: list[str]) -> tuple[list[str], list[str], dict]:
    """(consistency findings, MLflow runs left RUNNING, the pyfunc champion's answers to ``users``: requests,
    errors and an example failure) of the soak's workdir, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", CHECK, json.dumps(users)], cwd=work, capture_output=True, text=True,
                         check=True)
    problems, running, pyfunc = json.loads(out.stdout.strip().splitlines()[-1])
    return problems, running, pyfunc


def new_run(work: Path, before: set[str]) -> Path | None:
    """The newest run folder created after ``before`` (the names that were there), else None."""
    runs = work / "wd" / "runs"
    new = sorted(set(os.listdir(runs)) - before) if runs.is_dir() else []
    return runs / new[-1] if new else None


def current_step(work: Path, before: set[str]) -> str | None:
    """The step a run started after ``before`` is in now (``state.json``), else None."""
    run = new_run(work, before)
    if run is None:
        return None
    try:
        return json.loads((run / "state.json").read_text()).get("step")
    except (OSError, ValueError):  # not written yet, or replaced while read
        return None


def killed_in(work: Path, before: set[str]) -> str:
    """The step the killed process was in: ``state.json``'s step of a run folder it created, else "startup"."""
    run = new_run(work, before)
    if run is None:
        return "startup"
    if (run / "ended.json").is_file():
        return "after the run ended"
    return current_step(work, before) or "between steps"


def watch_steps(proc: subprocess.Popen, work: Path, before: set[str]) -> dict[str, float]:
    """Wait for ``proc``, polling its step every :data:`POLL_S`; the seconds each step was seen running."""
    seen: dict[str, float] = {}
    step, since = None, time.perf_counter()
    while proc.poll() is None:
        now_step = current_step(work, before)
        if now_step != step:
            if step is not None:
                seen[step] = seen.get(step, 0.0) + time.perf_counter() - since
            step, since = now_step, time.perf_counter()
        time.sleep(POLL_S)
    if step is not None:
        seen[step] = seen.get(step, 0.0) + time.perf_counter() - since
    return seen


def kill_in_step(proc: subprocess.Popen, work: Path, before: set[str], target: str, delay: float) -> float | None:
    """SIGKILL ``proc`` ``delay`` seconds after its run enters step ``target``; the seconds from start to the
    kill, or None when the process ended first (or never entered the step)."""
    t0, entered = time.perf_counter(), None
    while proc.poll() is None:
        if entered is None and current_step(work, before) == target:
            entered = time.perf_counter()
        if entered is not None and time.perf_counter() - entered >= delay:
            proc.send_signal(signal.SIGKILL)
            return time.perf_counter() - t0
        time.sleep(POLL_S)
    return None


def soak(args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed)
    work = Path(tempfile.mkdtemp(prefix="recsys-soak-")) if args.work is None else args.work
    work.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    atomic.write_text(work / "soak.toml", CONFIG.format(keep=args.keep, tolerance=args.tolerance))
    days = make_days(work, args.runs, args.events_per_day, args.seed)
    known_users = days[0]["user"].unique().sort().head(500).cast(pl.Utf8).to_list()
    counts = {"runs": 0, "published": 0, "rejected": 0, "data_check_failed": 0, "errors": 0, "kills": 0,
              "kills_missed": 0, "resumes": 0, "reruns_started_anew": 0, "publish_windows_after_kill": 0,
              "inconsistent_states": 0,
              "mlflow_running_left": 0, "pyfunc_requests": 0, "pyfunc_errors": 0}
    pyfunc_examples: list[str] = []
    rows, findings = [], []
    step_seconds: dict[str, list[float]] = {s: [] for s in STEPS}  # each step's duration in runs not killed
    kills_in: dict[str, int] = {}  # the step each kill landed in
    # exactly round(kill_fraction * runs) runs are killed, drawn among runs 2.. (run 1 has no duration yet)
    n_kill = min(round(args.kill_fraction * args.runs), args.runs - 1)
    to_kill = set((rng.choice(np.arange(2, args.runs + 1), size=n_kill, replace=False)).tolist())
    server = prober = None
    t_start = time.time()
    try:
        for day in range(args.runs):
            logs_now = days[: day + 2] if day == 0 else [days[day + 1]]
            for i, frame in enumerate(logs_now):
                name = f"day-{(0 if day == 0 else day + 1) + i:03d}.csv"
                with atomic.atomic_path(work / "logs" / name) as tmp:
                    frame.write_csv(tmp)
            kill = (day + 1) in to_kill
            row = {"run": day + 1, "kill_planned": bool(kill), "attempts": 0, "killed_at_s": None}
            t0 = time.time()
            runs_before = set(os.listdir(work / "wd" / "runs")) if (work / "wd" / "runs").is_dir() else set()
            while True:
                target = fault = None
                if kill and row["attempts"] == 0:
                    target = min(STEPS, key=lambda s: (kills_in.get(s, 0), STEPS.index(s)))
                    typical = float(np.median(step_seconds[target])) if step_seconds[target] else 0.0
                    if typical < SHORT_S:
                        fault = str(rng.choice(FAULT_POINTS[target]))
                    row.update(target_step=target, fault_point=fault)
                t_attempt = time.perf_counter()
                proc = cli(["pipeline", "run", "-c", "soak.toml", "--no-samples"], work, fault)
                row["attempts"] += 1
                out = None
                if target is not None:
                    at = None
                    if fault is None:
                        at = kill_in_step(proc, work, runs_before, target, float(rng.uniform(0.0, typical)))
                    else:
                        out = proc.communicate()[0]
                        if proc.returncode == -signal.SIGKILL:
                            at = time.perf_counter() - t_attempt
                    if at is None:
                        counts["kills_missed"] += 1  # it ended before the instant drawn
                    else:
                        row["killed_at_s"] = round(at, 2)
                        counts["kills"] += 1
                elif not kill:
                    for step, secs in watch_steps(proc, work, runs_before).items():
                        if step in step_seconds:
                            step_seconds[step].append(secs)
                out = proc.communicate()[0] if out is None else out
                if proc.returncode == -signal.SIGKILL:
                    row["killed_in"] = killed_in(work, before=runs_before)
                    kills_in[row["killed_in"]] = kills_in.get(row["killed_in"], 0) + 1
                    problems, _, _ = check(work, [])
                    if any("publish step did not finish" in p for p in problems):
                        counts["publish_windows_after_kill"] += 1
                    row["after_kill"] = problems
                    continue
                if row["attempts"] > 1:  # killed before its run folder existed: the rerun starts the run anew
                    counts["resumes" if "(resumed)" in out else "reruns_started_anew"] += 1
                break
            rc = proc.returncode
            outcome = {0: "published", 3: "data_check_failed", 4: "rejected"}.get(rc, "error")
            counts["errors" if outcome == "error" else outcome] += 1
            counts["runs"] += 1
            if outcome == "error":
                row["output"] = out[-2000:]
            champion = (work / "pub" / "current").exists()
            problems, running, pyfunc = check(work, known_users[:PYFUNC_USERS] if champion else [])
            counts["inconsistent_states"] += bool(problems)
            counts["mlflow_running_left"] += len(running)
            counts["pyfunc_requests"] += pyfunc["requests"]
            counts["pyfunc_errors"] += pyfunc["errors"]
            if pyfunc["example"] and len(pyfunc_examples) < 5:
                pyfunc_examples.append(pyfunc["example"])
            findings += problems
            bundles = sorted(p.name for p in (work / "pub" / "bundles").iterdir()) if (work / "pub").exists() else []
            row.update(outcome=outcome, rc=rc, seconds=round(time.time() - t0, 1), problems=problems,
                       bundles_on_disk=len(bundles))
            rows.append(row)
            print(f"run {day + 1:>2}: {outcome:<17} attempts {row['attempts']} "
                  f"{'killed at ' + str(row['killed_at_s']) + ' s' if row['killed_at_s'] else ''} "
                  f"bundles {len(bundles)} problems {problems}", flush=True)
            if server is None and (work / "pub" / "current").exists():
                port = free_port()
                server = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "pub", "--port", str(port),
                                           "--reload-interval", "0.2"], cwd=work, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)
                _wait_ready(f"http://127.0.0.1:{port}")
                prober = Prober(f"http://127.0.0.1:{port}", known_users, args.seed)
                prober.start()
    finally:
        if prober is not None:
            prober.stop()
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    bundles_on_disk = len(list((work / "pub" / "bundles").iterdir())) if (work / "pub").exists() else 0
    result = {
        **counts, "http_requests": prober.requests if prober else 0, "http_errors": prober.errors if prober else 0,
        "http_error_examples": prober.examples if prober else [], "pyfunc_error_examples": pyfunc_examples,
        "bundles_served": sorted(prober.bundles)
        if prober else [], "bundles_on_disk": bundles_on_disk, "keep": args.keep, "findings": findings,
        "seconds": round(time.time() - t_start, 1), "rows": rows, "work": str(work), "kills_in": kills_in,
        "step_median_s": {s: round(float(np.median(v)), 2) for s, v in step_seconds.items() if v},
    }
    if args.work is None and not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _wait_ready(url: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the server at {url} did not become ready in {timeout} s")


def _models(r: dict) -> str:
    """The models a soak trained (a report from before they were recorded trained popularity and ALS)."""
    if "models" not in r:
        return "popularity + ALS"
    return f"{', '.join(r['models'])}: the model kinds of the shipped nightly config, small"


def markdown(r: dict) -> str:
    lines = ["# Pipeline soak: consecutive runs, SIGKILLs in every step, a server queried throughout", "",
             *harness.header_lines(r["meta"]),
             f"Each run adds one day of a synthetic log ({r['events_per_day']:,} events; the first run reads "
             f"{3 * r['events_per_day']:,} + one day) to the log folder and runs `recsys pipeline run` "
             f"({_models(r)}; gate tolerance "
             f"{r['tolerance']}). Runs drawn for a kill ({r['kill_fraction']:.2f} of them, chosen at random) aim "
             "at the step with the fewest kills so far: SIGKILLed at a random instant within it (up to the step's "
             f"median duration in the runs not killed), or, in a step shorter than {SHORT_S} s, by the process "
             "itself at one of the step's crash-injection points drawn at random; then run again until they end. "
             "After every ended run the champion is loaded as an MLflow pyfunc model from the registry alias and "
             f"asked for {PYFUNC_USERS} known users' top 10.", "",
             "| figure | value | must be |", "| --- | ---: | --- |"]
    must = {"inconsistent_states": "0", "http_errors": "0", "mlflow_running_left": "0", "errors": "0",
            "pyfunc_errors": "0", "bundles_on_disk": f"keep ({r['keep']})"}
    for key in ("runs", "published", "rejected", "data_check_failed", "errors", "kills", "kills_missed", "resumes",
                "reruns_started_anew", "publish_windows_after_kill", "inconsistent_states", "mlflow_running_left",
                "http_requests", "http_errors", "pyfunc_requests", "pyfunc_errors", "bundles_on_disk", "keep"):
        lines.append(f"| {key.replace('_', ' ')} | {r.get(key, 0):,} | {must.get(key, '')} |")
    lines += ["", "Kills by the step they landed in (target: at least 3 in every step):", "",
              "| step | kills | median s (runs not killed) |", "| --- | ---: | ---: |"]
    medians = r.get("step_median_s", {})
    for step in [*STEPS, *sorted(set(r.get("kills_in", {})) - set(STEPS))]:
        lines.append(f"| {step} | {r.get('kills_in', {}).get(step, 0)} | {medians.get(step, '-')} |")
    lines += ["", "- kills missed: the run ended before it reached the instant drawn. Reruns started anew: the "
              "kill came before the run folder existed (process start-up) or after the run had ended, so there was "
              "nothing to resume and the rerun was a new run.",
              "- inconsistent states: `pipelines.status.consistency` after every ended run (current, "
              "champion.json, published.json, the registry alias `champion`, the run markers).",
              "- publish windows after kill: kills that landed inside publish, where `current` already served the new "
              "bundle and champion.json still named the old one until the rerun finished the step.",
              f"- bundles served (from `/v1/model` while probing): {len(r['bundles_served'])}.", "",
              "| run | outcome | attempts | aimed at step | by fault point | killed at (s) | killed in step | seconds "
              "| bundles on disk |",
              "| ---: | --- | ---: | --- | --- | ---: | --- | ---: | ---: |"]
    for row in r["rows"]:
        lines.append(f"| {row['run']} | {row['outcome']} | {row['attempts']} | {row.get('target_step', '')} | "
                     f"{row.get('fault_point') or ''} | "
                     f"{row['killed_at_s'] or ''} | {row.get('killed_in', '')} | {row['seconds']} | "
                     f"{row['bundles_on_disk']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=20, help="consecutive pipeline runs (default 20)")
    ap.add_argument("--kill-fraction", type=float, default=1 / 3,
                    help="share of runs SIGKILLed once, drawn at random (default 1/3)")
    ap.add_argument("--events-per-day", type=int, default=6000, help="events in each day's log file")
    ap.add_argument("--keep", type=int, default=3, help="pipeline.keep: published bundles kept")
    ap.add_argument("--tolerance", type=float, default=0.0, help="gate tolerance (0: some runs are rejected)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one, removed)")
    ap.add_argument("--keep-work", action="store_true", help="keep the temporary working folder")
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "reports", help="report folder")
    args = ap.parse_args()
    run = harness.ReportRun(seeds=[args.seed])  # the commit as the run starts
    r = soak(args)
    r.update(meta=run.finish(), events_per_day=args.events_per_day, tolerance=args.tolerance,
             kill_fraction=args.kill_fraction, models=list(MODELS))
    atomic.write_text(args.out / "soak_pipeline.json", json.dumps(r, indent=2))
    atomic.write_text(args.out / "soak_pipeline.md", markdown(r))
    print(markdown(r))
    bad = (r["inconsistent_states"] or r["http_errors"] or r["mlflow_running_left"] or r["errors"]
           or r["pyfunc_errors"])
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
