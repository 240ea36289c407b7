"""The champion record of a pipeline workdir, and rollback to the previously published bundle.

``<workdir>/champion.json`` names the bundle being served, the prepared data it was trained on
(whose id maps the next run extends) and its registry version; ``<workdir>/published.json``
lists every publication, newest last, so a rollback knows what came before.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipelines import model_registry, tracking
from pipelines.pipeline_config import PipelineConfig
from pipelines.runstate import now, run_lock
from recsys import atomic


def history(workdir: Path) -> list[dict]:
    p = workdir / "published.json"
    return json.loads(p.read_text())["published"] if p.is_file() else []


def record_champion(workdir: Path, entry: dict) -> None:
    """Append ``entry`` to the publication history and make it the champion.

    Idempotent per run: when the history already ends with ``entry``'s run (a rerun after a kill between
    the two writes), it is not appended again and ``champion.json`` is (re)written from it.
    """
    entries = history(workdir)
    if not entries or entries[-1].get("run_id") != entry.get("run_id"):
        entries = entries + [{**entry, "published_at": now()}]
        atomic.write_json(workdir / "published.json", {"published": entries})
    atomic.write_json(workdir / "champion.json", entries[-1])


def interrupted_publish(workdir: Path) -> str | None:
    """The newest run when it passed its gate but has no publish marker (killed before or inside publish)."""
    runs = workdir / "runs"
    found = sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")) if runs.is_dir() else []
    if found and (found[-1] / "gate.done").is_file() and not (found[-1] / "publish.done").is_file():
        return found[-1].name
    return None


def rollback_champion(cfg: PipelineConfig) -> Path:
    """Switch ``current`` back to the previous bundle, update the champion record and registry alias."""
    from recsys.export.publish import rollback

    workdir = Path(cfg.pipeline.workdir)
    with run_lock(workdir):
        interrupted = interrupted_publish(workdir)
        if interrupted:
            raise RuntimeError(f"run {interrupted} passed its gate but was stopped before its publish step "
                               "finished; finish it first with `recsys pipeline run` (it resumes there), then "
                               "roll back")
        entries = history(workdir)
        if len(entries) < 2:
            raise ValueError(f"nothing to roll back to: {workdir}/published.json lists {len(entries)} publication(s)")
        previous = entries[-2]
        if not Path(previous["bundle"]).is_dir():
            raise FileNotFoundError(f"the previous bundle {previous['bundle']} was pruned (pipeline.keep = "
                                    f"{cfg.pipeline.keep}); publish it again with `recsys pipeline run --from publish`")
        restored = rollback(Path(cfg.pipeline.bundles))
        atomic.write_json(workdir / "published.json", {"published": entries[:-1]})
        atomic.write_json(workdir / "champion.json", {**previous, "rolled_back_at": now()})
        tracking.setup(cfg.pipeline.experiment)
        if previous.get("version"):
            model_registry.promote(cfg.pipeline.registered_model, previous["version"])
    return restored
