"""`recsys pipeline status`: the champion, the last runs and their outcomes, the lock holder, and a
consistency check of the publish state (``current``, ``champion.json``, the registry alias, the run
markers) that the crash tests and the soak benchmark assert on."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from pipelines.pipeline_config import PipelineConfig
from pipelines.publishing import history, interrupted_publish
from pipelines.runstate import RunDir
from pipelines.steps import STEPS
from serving.format import MANIFEST


def lock_holder(workdir: Path) -> str | None:
    """Who holds ``<workdir>/pipeline.lock`` ("pid N since T"), or None when no run is active."""
    path = workdir / "pipeline.lock"
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return path.read_text().strip() or "unknown"
    finally:
        os.close(fd)
    return None


def run_outcome(run: RunDir, running: bool) -> dict[str, Any]:
    """One run's row: its outcome (published, rejected + reason, data_check_failed, running, stopped at X)."""
    ended = run.path / "ended.json"
    state = run.state()
    row: dict[str, Any] = {"run_id": run.run_id, "attempts": state.get("attempts", 0)}
    failed = run.failed_models()
    if failed:
        row["failed_models"] = failed
    if run.is_done("evaluate"):  # which model the run chose on validation, and why
        evaluated = run.info("evaluate")
        row.update(candidate=evaluated.get("candidate"), chosen_because=evaluated.get("reason"))
    if ended.is_file():
        info = json.loads(ended.read_text())
        row.update(outcome=info["outcome"], at=info.get("at"), step=info.get("step"), reason=info.get("message"))
        return row
    step = next((s for s in STEPS if not run.is_done(s)), None)
    if running:
        row.update(outcome="running", step=state.get("step") or step)
    elif state.get("error"):
        row.update(outcome="failed", step=state.get("step") or step, reason=state["error"])
    else:
        row.update(outcome="stopped", step=step, reason="killed or interrupted; the next `recsys pipeline run` "
                                                        "resumes it")
    return row


def consistency(workdir: Path, bundles: Path, registered_model: str | None = None) -> list[str]:
    """Every disagreement between ``current``, the champion record, the registry alias and the run markers.

    Empty when the publish state is consistent. ``registered_model`` also checks the MLflow alias
    (the caller has set up tracking).
    """
    from recsys.export.publish import current_version
    from serving import format as fmt
    from serving.loader import read_manifest

    problems = []
    champ_file = workdir / "champion.json"
    champ = json.loads(champ_file.read_text()) if champ_file.is_file() else None
    cur = current_version(bundles)
    pending = interrupted_publish(workdir)
    if pending:
        problems.append(f"run {pending} passed its gate but its publish step did not finish; "
                        "`recsys pipeline run` resumes and finishes it")
    if cur is not None:
        target = bundles / fmt.BUNDLES_DIR / cur
        if not target.is_dir():
            problems.append(f"current points at {target}, which does not exist")
        else:
            try:
                read_manifest(target)
            except Exception as exc:  # noqa: BLE001 - any unreadable manifest is the finding
                problems.append(f"current bundle {target} has no readable manifest: {exc}")
    if (champ is None) != (cur is None):
        problems.append(f"champion.json names {champ and champ.get('bundle')} but current is {cur}")
    elif champ is not None and Path(champ["bundle"]).name != cur:
        problems.append(f"champion.json names {Path(champ['bundle']).name} but current points at {cur}")
    entries = history(workdir)
    if champ is not None and entries and entries[-1].get("run_id") != champ.get("run_id"):
        problems.append(f"published.json ends with run {entries[-1].get('run_id')} but the champion is run "
                        f"{champ.get('run_id')}")
    runs = workdir / "runs"
    for p in sorted(runs.iterdir()) if runs.is_dir() else []:
        run = RunDir(p)
        if run.is_done("publish"):
            ended = p / "ended.json"
            outcome = json.loads(ended.read_text())["outcome"] if ended.is_file() else None
            if outcome != "published" and p.name != pending:
                problems.append(f"run {p.name} has publish.done but ended as {outcome}")
    if registered_model and champ is not None and champ.get("version"):
        from pipelines.model_registry import CHAMPION, alias_version

        alias = alias_version(registered_model, CHAMPION)
        if alias != str(champ["version"]):
            problems.append(f"registry alias {registered_model}@{CHAMPION} is version {alias}, champion.json says "
                            f"{champ['version']}")
    return problems


def pipeline_status(cfg: PipelineConfig, last: int = 10, check_registry: bool = True) -> dict[str, Any]:
    """Champion, the ``last`` runs newest first, the lock holder and the consistency findings."""
    workdir, bundles = Path(cfg.pipeline.workdir), Path(cfg.pipeline.bundles)
    holder = lock_holder(workdir)
    champ_file = workdir / "champion.json"
    champ = json.loads(champ_file.read_text()) if champ_file.is_file() else None
    champion = None
    if champ is not None:
        manifest = Path(champ["bundle"]) / MANIFEST
        model = json.loads(manifest.read_text()).get("model") if manifest.is_file() else None
        gate = champ.get("gate", {})
        champion = {"run_id": champ.get("run_id"), "model": model, "version": champ.get("version"),
                    "bundle": champ.get("bundle"), "published_at": champ.get("published_at"),
                    "rolled_back_at": champ.get("rolled_back_at"), "gate_metric": gate.get("metric"),
                    "gate_value": gate.get("candidate")}
    runs_dir = workdir / "runs"
    runs = sorted((RunDir(p) for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda r: r.run_id, reverse=True) if runs_dir.is_dir() else []
    rows = [run_outcome(r, running=bool(holder) and i == 0) for i, r in enumerate(runs[:last])]
    registry = None
    if check_registry and champ is not None:
        from pipelines import tracking

        tracking.setup(cfg.pipeline.experiment)
        registry = cfg.pipeline.registered_model
    return {"workdir": str(workdir), "bundles": str(bundles), "lock": holder, "champion": champion,
            "runs": rows, "problems": consistency(workdir, bundles, registry)}


def format_status(s: dict[str, Any]) -> str:
    """The human-readable form of :func:`pipeline_status`."""
    lines = [f"workdir  {s['workdir']}   bundles {s['bundles']}",
             f"lock     {('held: ' + s['lock']) if s['lock'] else 'free (no run active)'}"]
    c = s["champion"]
    if c is None:
        lines.append("champion none published yet")
    else:
        gate = f"{c['gate_metric']}={c['gate_value']:.4f}" if isinstance(c.get("gate_value"), float) else "gate -"
        when = c.get("rolled_back_at") and f"rolled back to at {c['rolled_back_at']}" or f"since {c['published_at']}"
        lines.append(f"champion run {c['run_id']}  model {c['model']}  {gate}  registry v{c['version']}  {when}")
    lines.append(f"runs     last {len(s['runs'])}, newest first:")
    for r in s["runs"]:
        extra = f" at {r['step']}" if r.get("step") and r["outcome"] != "published" else ""
        reason = f": {r['reason']}" if r.get("reason") and r["outcome"] != "published" else ""
        lines.append(f"  {r['run_id']}  {r['outcome']}{extra}{reason[:160]}"
                     + (f"  (attempts {r['attempts']})" if r.get("attempts", 0) > 1 else ""))
        lines += [f"      model {label} failed to train: {err[:160]}"
                  for label, err in r.get("failed_models", {}).items()]
        if r.get("chosen_because"):
            lines.append(f"      candidate {r['candidate']}: {r['chosen_because'][:200]}")
    if s["problems"]:
        lines.append("problems:")
        lines += [f"  - {p}" for p in s["problems"]]
    else:
        lines.append("state    consistent (current, champion.json, registry alias and run markers agree)")
    return "\n".join(lines)
