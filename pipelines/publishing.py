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
from pipelines.runstate import now, run_lock, write_json_atomic


def history(workdir: Path) -> list[dict]:
    p = workdir / "published.json"
    return json.loads(p.read_text())["published"] if p.is_file() else []


def record_champion(workdir: Path, entry: dict) -> None:
    """Append ``entry`` to the publication history and make it the champion."""
    entries = history(workdir) + [{**entry, "published_at": now()}]
    write_json_atomic(workdir / "published.json", {"published": entries})
    write_json_atomic(workdir / "champion.json", entries[-1])


def rollback_champion(cfg: PipelineConfig) -> Path:
    """Switch ``current`` back to the previous bundle, update the champion record and registry alias."""
    from recsys.export.publish import rollback

    workdir = Path(cfg.pipeline.workdir)
    with run_lock(workdir):
        entries = history(workdir)
        if len(entries) < 2:
            raise ValueError(f"nothing to roll back to: {workdir}/published.json lists {len(entries)} publication(s)")
        previous = entries[-2]
        if not Path(previous["bundle"]).is_dir():
            raise FileNotFoundError(f"the previous bundle {previous['bundle']} was pruned (pipeline.keep = "
                                    f"{cfg.pipeline.keep}); publish it again with `recsys pipeline run --from publish`")
        restored = rollback(Path(cfg.pipeline.bundles))
        write_json_atomic(workdir / "published.json", {"published": entries[:-1]})
        write_json_atomic(workdir / "champion.json", {**previous, "rolled_back_at": now()})
        tracking.setup(cfg.pipeline.experiment)
        if previous.get("version"):
            model_registry.promote(cfg.pipeline.registered_model, previous["version"])
    return restored
