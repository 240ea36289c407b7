"""The steps of the scheduled pipeline; each reads and writes files under the run folder.

``ingest``   read the logs (new files appended to what earlier runs read), validate, clean, keep
             the champion's id maps stable, split; fails the run on bad-row fraction or row drop
``train``    one nested MLflow run per configured model (``train-<label>.done`` each);
             checkpoints under ``checkpoints/<label>`` let a killed training resume; a model that
             raises (non-finite loss, out of memory, a bad value) ends its run FAILED with the reason,
             is recorded as failed and the others go on; no model trained ends the run (exit 5)
``evaluate`` pick the candidate by validation (:mod:`pipelines.selection`: the simplest model level with
             the best within ``select_within_se`` standard errors), or the configured model
``export``   the candidate's bundle (vectors, Annoy index, ids, seen items) + a registry version
``gate``     candidate vs champion on this run's test split, each bundle encoding the test histories
             with its own encoder; a worse candidate ends the run
``publish``  switch ``current`` atomically, keep the last N bundles, alias ``champion``
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipelines import gate as gating
from pipelines import ingest_logs, model_registry, scheduled_tune, selection, tracking, warm_start
from pipelines.config import RunConfig, RunSection
from pipelines.pipeline_config import PipelineConfig
from pipelines.publishing import record_champion
from pipelines.runstate import ExitCode, PipelineExit, RunDir, disk_full, fault_point, previous_runs
from pipelines.train import protocol_for, train_run
from recsys import atomic
from recsys.models.registry import MODELS
from recsys.prepare import prepare
from recsys.prepare.format import Prepared, all_events, load_prepared, raw_items_meta

log = logging.getLogger(__name__)

STEPS = ("ingest", "train", "evaluate", "export", "gate", "publish")


@dataclass
class Context:
    """What every step sees: the config, the run folder, the publish root."""

    cfg: PipelineConfig
    run: RunDir
    workdir: Path
    bundles: Path
    echo: Callable[[str], None] = print
    parent_run_id: str = ""
    _data: Prepared | None = field(default=None, repr=False)

    def data(self) -> Prepared:
        if self._data is None:
            self._data = load_prepared(self.run.path / "data", self.cfg.data.name)
        return self._data

    @property
    def champion_file(self) -> Path:
        return self.workdir / "champion.json"

    def champion(self) -> dict | None:
        return json.loads(self.champion_file.read_text()) if self.champion_file.is_file() else None


def step_ingest(ctx: Context) -> None:
    cfg, p = ctx.cfg, ctx.cfg.pipeline
    champ = ctx.champion()
    id_maps_from = Path(champ["data_dir"]) if (champ and p.warm_start) else None
    folder = ingest_logs.is_log_folder(cfg.data)
    ingested = ingest_logs.collect(cfg.data, ctx.workdir, ctx.run.run_id) if folder else None
    try:
        data = prepare(cfg.data, ctx.run.path / "data", seed=p.seed, id_maps_from=id_maps_from, ingested=ingested)
    except ValueError as exc:  # the reader's max_bad_fraction, an empty result, ...
        raise PipelineExit(ExitCode.DATA_CHECK_FAILED, f"ingest failed its checks: {exc}") from exc
    fault_point("ingest-prepared")
    checks = _check_ingest(ctx, data)
    if ingested is not None:
        ingest_logs.commit(ctx.workdir)
        fault_point("ingest-committed")
    r = data.report
    ctx.run.mark_done("ingest", rows_read=r["rows_read"], accepted=r["accepted"], quarantined=r["quarantined"],
                      n_events=r["n_events"], n_users=r["n_users"], n_items=r["n_items"], checks=checks)
    ctx.echo(f"  {r['rows_read']:,} rows read, {r['n_events']:,} events, {r['n_users']:,} users, "
             f"{r['n_items']:,} items (quarantined {r['quarantined']:,})")
    ctx.echo(f"  this run's new rows: {checks['new_rows_read']:,} read, {checks['new_quarantined']:,} quarantined "
             f"({checks['new_bad_fraction']:.2%}; all rows so far {checks['all_bad_fraction']:.2%})")


def _check_ingest(ctx: Context, data: Prepared) -> dict:
    """Judge this run's new rows alone (a growing log must not dilute today's bad rows); returns both figures."""
    p, r = ctx.cfg.pipeline, data.report
    new_read = int(r.get("stats", {}).get("new_rows_read", r["rows_read"]))
    new_bad = int(r.get("stats", {}).get("new_quarantined", r["quarantined"]))
    checks = {"new_rows_read": new_read, "new_quarantined": new_bad, "new_bad_fraction": new_bad / max(new_read, 1),
              "rows_read": r["rows_read"], "quarantined": r["quarantined"],
              "all_bad_fraction": r["quarantined"] / max(r["rows_read"], 1)}
    if checks["new_bad_fraction"] > p.max_bad_fraction:
        raise PipelineExit(ExitCode.DATA_CHECK_FAILED, f"{checks['new_bad_fraction']:.1%} of this run's "
                           f"{new_read:,} new rows were quarantined ({new_bad:,}), above pipeline.max_bad_fraction = "
                           f"{p.max_bad_fraction}; see {data.directory}/quarantine.parquet")
    for prev in previous_runs(ctx.workdir, ctx.run.run_id):
        if prev.is_done("ingest"):
            before = prev.info("ingest")["n_events"]
            if r["n_events"] < before * (1 - p.max_row_drop):
                raise PipelineExit(ExitCode.DATA_CHECK_FAILED, f"the log shrank from {before:,} events (run "
                                   f"{prev.run_id}) to {r['n_events']:,}, more than pipeline.max_row_drop = "
                                   f"{p.max_row_drop}; check the log source before publishing from it")
            break
    return checks


def _run_config(ctx: Context, label: str, name: str, params: dict, max_minutes: float = 0.0) -> RunConfig:
    p = ctx.cfg.pipeline
    return RunConfig(run=RunSection(experiment=p.experiment, name=label, seed=p.seed, device=p.device,
                                    max_minutes=max_minutes),
                     data=ctx.cfg.data, model_name=name, model=dict(params), eval=ctx.cfg.eval, source=ctx.cfg.source)


def step_train(ctx: Context) -> None:
    data = ctx.data()
    for m in ctx.cfg.models:
        step = f"train-{m.label}"
        if ctx.run.is_done(step):
            ctx.echo(f"  {m.label}: already trained, skipped")
            continue
        params, cls = dict(m.params), MODELS[m.name]
        tracking.supersede_children(ctx.parent_run_id, m.label, f"trained again by attempt "
                                    f"{ctx.run.state().get('attempts')} of pipeline run {ctx.run.run_id}")
        if cls.checkpoints:
            params.setdefault("checkpoint_dir", str(ctx.run.path / "checkpoints" / m.label))
        if m.label in ctx.cfg.tune.models:  # [tune]: a new study when one is due, else the last study's best
            params.update(scheduled_tune.tuned_params(
                ctx.workdir, ctx.run.run_id, ctx.cfg.pipeline.name, m.label, _run_config(ctx, m.label, m.name, params),
                data, ctx.cfg.tune, ctx.run.path / "tune", ctx.echo))
        champion = ctx.champion() if ctx.cfg.pipeline.warm_start else None
        warm = warm_start.from_champion(champion, ctx.run.path, m.label, m.name, params, data)
        if warm:  # from the champion (its vectors or its run's same-label model)
            ctx.echo(f"  {m.label}: warm start from the champion ({champion['run_id']})")
            params.update(warm)
        try:
            result = train_run(_run_config(ctx, m.label, m.name, params, m.max_minutes), ctx.run.path / "train",
                               data=data, nested=True, echo=ctx.echo)
        except Exception as exc:  # this model only: its MLflow run ended FAILED with the reason; the others go on
            if disk_full(exc):  # not this model's fault: the run stops (exit 6) and a rerun trains it again
                raise
            reason = f"{type(exc).__name__}: {exc}"
            log.exception("%s failed to train", m.label)
            ctx.run.mark_done(step, failed=True, model=m.name, error=reason[:2000],
                              run_id=tracking.latest_child(ctx.parent_run_id, m.label))
            ctx.echo(f"  {m.label}: FAILED, {reason[:300]}; the other models go on")
            continue
        fault_point(f"trained-{m.label}")
        ctx.run.mark_done(step, run_id=result.run_id, model=m.name, model_dir=str(result.model_dir),
                          val=result.val, test=result.test, seconds=result.seconds, stop_reason=result.stop_reason,
                          exclude_seen=result.exclude_seen, capacity=result.capacity)
        ctx.echo(f"  {result.summary()}")
    failed = ctx.run.failed_models()
    if all(m.label in failed for m in ctx.cfg.models):
        raise PipelineExit(ExitCode.NO_MODEL, "no model trained, nothing to publish; the champion stays published: "
                           + "; ".join(f"{label}: {err[:300]}" for label, err in failed.items()))
    ctx.run.mark_done("train", failed=sorted(failed))


def step_evaluate(ctx: Context) -> None:
    p = ctx.cfg.pipeline
    infos = {m.label: ctx.run.info(f"train-{m.label}") for m in ctx.cfg.models}
    trained = {label: info for label, info in infos.items() if not info.get("failed")}
    rows = sorted(trained.items(), key=lambda kv: -kv[1]["val"][p.metric])
    for label, info in rows:
        ctx.echo(f"  {label:<12} val_{p.metric}={info['val'][p.metric]:.4f}  test_{p.metric}="
                 f"{info['test'][p.metric]:.4f}")
    for label, info in infos.items():
        if info.get("failed"):
            ctx.echo(f"  {label:<12} failed to train: {info.get('error', '')[:200]}")
    if p.publish == "best":
        choice = selection.choose(trained, p.metric, p.select_within_se)
        label, reason = choice.label, choice.reason
    else:
        label, reason = p.publish, f"pipeline.publish = {p.publish!r}"
    if label not in trained:
        raise PipelineExit(ExitCode.NO_MODEL, f"pipeline.publish = {label!r}, but that model failed to train "
                           f"({infos[label].get('error', '')[:300]}); the champion stays published")
    ctx.echo(f"  candidate {label}: {reason}")
    atomic.write_json(ctx.run.path / "evaluation.json", {"candidate": label, "reason": reason, "models": trained})
    fault_point("evaluated")
    ctx.run.mark_done("evaluate", candidate=label, model=trained[label]["model"], reason=reason)


def step_export(ctx: Context) -> None:
    from recsys.export.bundle import export_model
    from recsys.export.extend import export_with_catalogue

    data, info = ctx.data(), ctx.run.info("evaluate")
    trained = ctx.run.info(f"train-{info['candidate']}")
    model = MODELS[info["model"]].load(trained["model_dir"])
    bundle = ctx.run.path / "bundle"  # written atomically (a killed export leaves the old bundle or none)
    # the one export path: stored user vectors and histories from every event each user has, newest included
    kwargs = {"run_id": ctx.parent_run_id, "model_name": f"{info['candidate']}:{model.name}",
              "item_meta": raw_items_meta(data), "overwrite": True,
              "exclude_seen": trained.get("exclude_seen", True)}  # the training run's decision, served the same
    if ctx.cfg.pipeline.catalogue:  # plus the catalogue's items the data does not know, from their content
        export_with_catalogue(bundle, model, data.items.ids, data.users.ids, all_events(data),
                              ctx.cfg.pipeline.catalogue, **kwargs)
    else:
        export_model(bundle, model, data.items.ids, data.users.ids, histories=all_events(data), **kwargs)
    fault_point("exported")
    version = model_registry.register_bundle(bundle, ctx.cfg.pipeline.registered_model, ctx.parent_run_id)
    fault_point("registered")
    ctx.run.mark_done("export", bundle=str(bundle), version=version)
    ctx.echo(f"  bundle {bundle} (registry version {version}, alias candidate)")


def step_gate(ctx: Context) -> None:
    p, data = ctx.cfg.pipeline, ctx.data()
    protocol = protocol_for(_run_config(ctx, "gate", "popularity", {}), data)
    cand = gating.bundle_metrics(Path(ctx.run.info("export")["bundle"]), data.split, data.items, protocol)
    champ_info = ctx.champion()
    champ = None
    if champ_info and Path(champ_info["bundle"]).is_dir():
        champ = gating.bundle_metrics(Path(champ_info["bundle"]), data.split, data.items, protocol)
    decision = gating.decide(cand, champ, p.metric, p.tolerance)
    atomic.write_json(ctx.run.path / "gate.json", {**decision.as_dict(), "candidate_metrics": cand,
                                                   "champion_metrics": champ})
    fault_point("gated")
    for who, m in (("candidate", cand), ("champion", champ)):
        if m and (m["gate_unknown_items"] or m["gate_fallback_users"]):
            ctx.echo(f"  gate: the {who} does not know {int(m['gate_unknown_items']):,} items "
                     f"({int(m['gate_unknown_targets']):,} test targets); {int(m['gate_fallback_users']):,} users "
                     "had no known history item and got its popularity ranking")
    ctx.echo(f"  gate: {decision.reason}")
    if not decision.promote:
        raise PipelineExit(ExitCode.GATE_REJECTED, f"gate rejected the candidate: {decision.reason}; the champion "
                           "stays published")
    ctx.run.mark_done("gate", **decision.as_dict())


def step_publish(ctx: Context) -> None:
    """Move the bundle into the publish root, switch ``current``, alias ``champion``, record the champion.

    Each effect is idempotent and checked before it is redone, so a rerun after a kill at any instant
    (three fault points below) finishes the publication: the bundle already moved is verified and
    reused, ``current`` is pointed again, the alias set again, and the champion record appended once.
    Until that rerun, ``current`` may already serve the new bundle (complete and verified; the switch is
    one rename) while ``champion.json`` names the old one; ``recsys pipeline status`` reports it.
    """
    from recsys.export.publish import place, point, prune

    p, exported = ctx.cfg.pipeline, ctx.run.info("export")
    published = place(ctx.bundles, Path(exported["bundle"]), version=ctx.run.run_id)
    fault_point("publish-placed")
    point(ctx.bundles, published.name)
    fault_point("publish-switched")
    model_registry.promote(p.registered_model, exported["version"])
    fault_point("publish-promoted")
    record_champion(ctx.workdir, {"run_id": ctx.run.run_id, "bundle": str(published),
                                  "data_dir": str(ctx.run.path / "data"), "version": exported["version"],
                                  "gate": ctx.run.info("gate")})
    fault_point("publish-recorded")
    prune(ctx.bundles, p.keep)
    ctx.run.mark_done("publish", bundle=str(published))
    ctx.echo(f"  published {published} as {ctx.bundles}/current (registry alias champion -> v{exported['version']})")


#: every crash-injection point of the steps, in the order a run passes them (``fitted-<label>``, inside the
#: model's nested MLflow run, and ``trained-<label>`` once per model); the crash tests kill a run at each
FAULT_POINTS = ("ingest-prepared", "ingest-committed", "fitted-{label}", "trained-{label}", "evaluated", "exported",
                "registered", "gated", "publish-placed", "publish-switched", "publish-promoted", "publish-recorded")


STEP_FUNCS: dict[str, Callable[[Context], None]] = {
    "ingest": step_ingest, "train": step_train, "evaluate": step_evaluate,
    "export": step_export, "gate": step_gate, "publish": step_publish,
}
