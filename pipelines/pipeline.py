"""`recsys pipeline run`: ingest -> train -> evaluate -> export -> gate -> publish, resumable.

Every step writes under the run folder (``<workdir>/runs/<run_id>/``) and leaves ``<step>.done``
when its outputs are complete; a rerun after a crash reopens that run and starts at the first
step without a marker (training resumes from its checkpoints). Nothing reaches the publish root
before the gate passed, and publishing is an atomic switch of ``current``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import mlflow

from pipelines import tracking
from pipelines.pipeline_config import PipelineConfig
from pipelines.runstate import ExitCode, PipelineExit, RunDir, disk_full, disk_full_message, now, open_run, run_lock
from pipelines.steps import STEP_FUNCS, STEPS, Context
from recsys.config import ConfigError, to_dict
from recsys.models.registry import check_model_config

log = logging.getLogger(__name__)

#: exit code -> how the run ended (``ended.json``); errors are not listed: such runs resume
ENDINGS = {ExitCode.DATA_CHECK_FAILED: "data_check_failed", ExitCode.GATE_REJECTED: "rejected",
           ExitCode.NO_MODEL: "no_model_trained"}


def plan(start: str | None = None, only: str | None = None) -> list[str]:
    """The steps a run will execute, in order."""
    for name, value in (("--from", start), ("--only", only)):
        if value is not None and value not in STEPS:
            raise PipelineExit(ExitCode.USAGE, f"{name} {value!r} is not a step; steps are {list(STEPS)}")
    if only:
        return [only]
    return list(STEPS[STEPS.index(start):]) if start else list(STEPS)


def check_models(cfg: PipelineConfig) -> None:
    """Every model entry validated against its config and the device before anything runs (a bf16 model on a
    CPU without bf16 fails here, not after the other models trained). Raises ``PipelineExit`` (exit 2)."""
    for m in cfg.models:
        try:
            check_model_config(m.name, m.params, cfg.pipeline.device, where=f"{cfg.source} [models.{m.label}]")
        except ConfigError as exc:
            raise PipelineExit(ExitCode.USAGE, str(exc)) from None


def run_pipeline(cfg: PipelineConfig, start: str | None = None, only: str | None = None,
                 echo: Callable[[str], None] = print) -> Context:
    """Run (or resume) the pipeline. Raises :class:`PipelineExit` for the documented non-zero endings."""
    workdir = Path(cfg.pipeline.workdir)
    steps = plan(start, only)
    check_models(cfg)
    try:
        with run_lock(workdir):
            run, resumed = open_run(workdir, reuse_latest=bool(start or only))
            if start or only:
                run.clear_from(steps)
            ctx = Context(cfg, run, workdir, Path(cfg.pipeline.bundles), echo=echo)
            handler = _attach_log(run)
            try:
                echo(f"pipeline run {run.run_id} ({'resumed' if resumed else 'new'}) in {run.path}")
                _run_steps(ctx, steps)
            finally:
                logging.getLogger().removeHandler(handler)
                handler.close()
    except PipelineExit:
        raise
    except Exception as exc:  # a full disk before any step began (the run folder, its state, MLflow's store)
        if disk_full(exc):
            raise PipelineExit(ExitCode.DISK_FULL, disk_full_message("start", workdir, exc)) from exc
        raise
    return ctx


def _run_steps(ctx: Context, steps: list[str]) -> None:
    tracking.setup(ctx.cfg.pipeline.experiment)
    with _ParentRun(ctx):
        attempts = ctx.run.state().get("attempts", 0) + 1
        ctx.run.update_state(parent_run_id=ctx.parent_run_id, config=ctx.cfg.source, attempts=attempts,
                             pid=os.getpid(), started_at=now(), step=None, error=None)
        mlflow.set_tag("attempts", attempts)
        for step in steps:
            if ctx.run.is_done(step):
                ctx.echo(f"[{step}] already done, skipped")
                continue
            t0 = time.perf_counter()
            ctx.echo(f"[{step}] started")
            ctx.run.update_state(step=step)
            try:
                STEP_FUNCS[step](ctx)
            except PipelineExit as exc:
                if exc.code in ENDINGS:
                    ctx.run.end(ENDINGS[exc.code], step=step, message=str(exc))
                else:
                    ctx.run.update_state(error=f"{exc}"[:2000])
                raise
            except Exception as exc:
                if disk_full(exc):  # the state file may not fit either: the message is what must reach the user
                    message = disk_full_message(step, ctx.run.path, exc)
                    with contextlib.suppress(OSError):
                        ctx.run.update_state(error=message[:2000])
                    raise PipelineExit(ExitCode.DISK_FULL, message) from exc
                ctx.run.update_state(error=f"{type(exc).__name__}: {exc}"[:2000])
                raise
            seconds = time.perf_counter() - t0
            mlflow.log_metric(f"step_{step}_seconds", seconds)
            ctx.echo(f"[{step}] done in {seconds:.1f} s")
        ctx.run.update_state(step=None)
        if ctx.run.is_done("publish"):
            ctx.run.end("published")
            mlflow.set_tag("outcome", "published")


class _ParentRun:
    """The pipeline's parent MLflow run: reopened on resume, FAILED when a step raises an error."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def __enter__(self) -> mlflow.ActiveRun:
        run_id = self.ctx.run.state().get("parent_run_id")
        if run_id:
            ended = tracking.end_orphaned_children(run_id, f"the pipeline process running it stopped (killed or "
                                                           f"crashed); run {self.ctx.run.run_id} resumed at {now()}")
            for child in ended:
                self.ctx.echo(f"  MLflow run {child} was left RUNNING by the stopped process: ended as KILLED")
            active = mlflow.start_run(run_id=run_id)
        else:
            tags = {"pipeline_run": self.ctx.run.run_id, "git_commit": tracking.git_commit(),
                    **tracking.package_versions()}
            active = mlflow.start_run(run_name=f"pipeline-{self.ctx.run.run_id}", tags=tags)
            tracking.log_params({f"pipeline.{k}": v for k, v in to_dict(self.ctx.cfg.pipeline).items()})
        self.ctx.parent_run_id = active.info.run_id
        return active

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            mlflow.end_run("FINISHED")
        elif isinstance(exc, PipelineExit) and exc.code in ENDINGS:
            mlflow.set_tag("outcome", ENDINGS[exc.code])
            mlflow.end_run("FINISHED")
        else:
            mlflow.set_tag("error", f"{type(exc).__name__}: {exc}"[:5000])
            mlflow.end_run("FAILED")


def _attach_log(run: RunDir) -> logging.Handler:
    """One log file per run: ``<run>/pipeline.log`` receives every log record while the run is open."""
    handler = logging.FileHandler(run.path / "pipeline.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler
