"""`recsys pipeline history`: every pipeline run's candidate, its gate metric against the champion's, the
decision and the reason, as a table and a PNG timeline. Read from the run folders alone (no MLflow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.runstate import RunDir
from pipelines.status import run_outcome

DECISIONS = {"published": "published", "rejected": "rejected", "data_check_failed": "data check failed",
             "no_model_trained": "no model trained"}


def run_history(workdir: Path) -> list[dict[str, Any]]:
    """One row per run, oldest first: run_id, outcome, candidate, metric, candidate and champion values,
    tolerance, reason."""
    runs_dir = workdir / "runs"
    if not runs_dir.is_dir():
        return []
    rows = []
    for p in sorted(q for q in runs_dir.iterdir() if q.is_dir() and not q.name.startswith(".")):
        run = RunDir(p)
        row = run_outcome(run, running=False)
        gate_file = p / "gate.json"
        gate = json.loads(gate_file.read_text()) if gate_file.is_file() else {}
        if run.is_done("evaluate"):
            row["candidate"] = run.info("evaluate").get("candidate")
        row.update(metric=gate.get("metric"), candidate_value=gate.get("candidate"),
                   champion_value=gate.get("champion"), tolerance=gate.get("tolerance"))
        if gate.get("reason") and row["outcome"] in ("published", "rejected"):
            row["reason"] = gate["reason"]
        rows.append(row)
    return rows


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def format_history(rows: list[dict[str, Any]], width: int = 120) -> str:
    """The table: run, outcome, candidate model, gate metric (candidate vs champion), reason (cut to fit)."""
    if not rows:
        return "no pipeline runs yet"
    head = f"{'run':<28}  {'decision':<17}  {'candidate':<12}  {'metric':<8}  {'cand.':>6}  {'champ.':>6}  reason"
    lines = [head, "-" * min(width, len(head) + 30)]
    for r in rows:
        decision = DECISIONS.get(r["outcome"], r["outcome"] + (f" at {r['step']}" if r.get("step") else ""))
        line = (f"{r['run_id']:<28}  {decision[:17]:<17}  {str(r.get('candidate') or '-')[:12]:<12}  "
                f"{str(r.get('metric') or '-')[:8]:<8}  {_num(r.get('candidate_value')):>6}  "
                f"{_num(r.get('champion_value')):>6}  ")
        reason = str(r.get("reason") or "")
        if r.get("failed_models"):
            reason = f"failed: {', '.join(r['failed_models'])}; " + reason
        lines.append((line + reason)[:width].rstrip())
    return "\n".join(lines)


def timeline(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """The gate metric of each run's candidate (marker = decision) and the champion's at that run, in order."""
    from pipelines import plots

    scored = [r for r in rows if r.get("candidate_value") is not None]
    if not scored:
        return None
    return plots.gate_timeline(scored, path)


__all__ = ["format_history", "run_history", "timeline"]
