"""`recsys pipeline run | rollback | status`: the scheduled training pipeline."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from pipelines.runstate import ExitCode, PipelineExit

app = typer.Typer(help="The scheduled pipeline: new logs -> trained, gated, published bundle.", no_args_is_help=True)

EXIT_CODES_HELP = (
    "Exit codes: 0 published (or plan printed), 1 unexpected error (rerun resumes), 2 bad config or usage, "
    "3 ingest checks failed, 4 gate rejected the candidate (champion kept), 5 no model trained, 6 the disk "
    "filled up (free space; rerun resumes), 75 another run holds the lock."
)


def _load(config: Path | None):
    from pipelines.pipeline_config import default_config, load_pipeline_config

    return load_pipeline_config(config) if config else default_config()


@app.command(help="Ingest -> train -> evaluate -> export -> gate -> publish, resuming an interrupted run. "
             + EXIT_CODES_HELP)
def run(
    config: Path = typer.Option(None, "--config", "-c", help="Pipeline TOML (experiments/pipelines/); "
                                "omitted: built-in defaults on synthetic data."),
    start: str = typer.Option(None, "--from", help="Rerun the latest run from this step on."),
    only: str = typer.Option(None, "--only", help="Run just this step of the latest run."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and exit."),
    samples: bool = typer.Option(True, help="Print sample recommendations from the published bundle."),
) -> None:
    from pipelines.pipeline import plan, run_pipeline

    try:
        cfg = _load(config)
        steps = plan(start, only)
        if dry_run:
            typer.echo(describe(cfg, steps))
            raise typer.Exit(ExitCode.OK)
        ctx = run_pipeline(cfg, start=start, only=only, echo=typer.echo)
    except PipelineExit as exc:
        typer.secho(f"pipeline stopped: {exc}", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(exc.code) from None
    except (ValueError, FileNotFoundError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(ExitCode.USAGE) from None
    if samples and ctx.run.is_done("publish"):
        typer.echo(sample_recommendations(ctx.bundles, cfg.pipeline.sample_users))


def describe(cfg, steps: list[str]) -> str:
    p = cfg.pipeline
    lines = [f"config   {cfg.source}", f"workdir  {p.workdir}   bundles {p.bundles} (keep {p.keep})",
             f"data     {cfg.data.path or f'synthetic ({cfg.data.synthetic_events:,} events)'}",
             "models   " + ", ".join(f"{m.label} ({m.name})" for m in cfg.models),
             f"gate     {p.metric}, tolerance {p.tolerance}; publish {p.publish}",
             "steps    " + " -> ".join(steps)]
    return "\n".join(lines)


def sample_recommendations(root: Path, n_users: int) -> str:
    """A few users' top-5 from the published bundle, through the serving API applications use."""
    import numpy as np

    from serving import Recommender

    rec = Recommender.load(root)
    users = rec.bundle.users.ids[: max(n_users, 0)]
    lines = [f"sample recommendations from {root}/current ({rec.manifest['model']}):"]
    for u in users:
        res = rec.recommend(u.item() if isinstance(u, np.generic) else u, k=5)
        titles = [m.get("title", "") if isinstance(m, dict) else "" for m in (res.meta or [None] * len(res.items))]
        shown = ", ".join(f"{i} {t!r}" if t else str(i) for i, t in zip(res.items, titles, strict=True))
        lines.append(f"  user {u}: {shown}   [{res.source}]")
    return "\n".join(lines)


@app.command()
def status(
    config: Path = typer.Option(None, "--config", "-c", help="Pipeline TOML (for its workdir and bundles)."),
    last: int = typer.Option(10, "--last", min=1, help="How many recent runs to list."),
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
) -> None:
    """The champion (run, model, gate metric, when), the last runs with their outcome (published, rejected
    with the reason, failed or stopped at a step, running) and the lock holder. Exits 1 when `current`,
    champion.json, the registry alias and the run markers disagree (a kill inside publish that no run has
    finished yet): the findings are listed."""
    import json

    from pipelines.status import format_status, pipeline_status

    try:
        s = pipeline_status(_load(config), last=last)
    except (ValueError, FileNotFoundError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(ExitCode.USAGE) from None
    typer.echo(json.dumps(s, indent=2, default=str) if as_json else format_status(s))
    if s["problems"]:
        raise typer.Exit(1)


@app.command()
def history(
    config: Path = typer.Option(None, "--config", "-c", help="Pipeline TOML (for its workdir)."),
    png: Path = typer.Option(None, "--png", help="Also draw the timeline PNG here."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
) -> None:
    """Every pipeline run, oldest first: its candidate, the gate metric against the champion's, the decision
    (published, rejected, data check failed, stopped) and the reason; --png draws them as a timeline."""
    import json

    from pipelines.history import format_history, run_history, timeline

    try:
        rows = run_history(Path(_load(config).pipeline.workdir))
    except (ValueError, FileNotFoundError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(ExitCode.USAGE) from None
    typer.echo(json.dumps(rows, indent=2, default=str) if as_json else format_history(rows))
    if png is not None:
        drawn = timeline(rows, png)
        typer.echo(f"wrote {drawn}" if drawn else "no gated runs yet: no timeline drawn")


@app.command()
def rollback(
    config: Path = typer.Option(None, "--config", "-c", help="Pipeline TOML (for its workdir and bundles)."),
) -> None:
    """Restore the previously published bundle as `current`; a running server picks it up."""
    from pipelines.publishing import rollback_champion

    cfg = _load(config)
    try:
        restored = rollback_champion(cfg)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(ExitCode.USAGE) from None
    typer.echo(f"current -> {restored}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    app()
