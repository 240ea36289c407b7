"""The `recsys` command line: data steps, training, experiment comparison, serving, the pipeline."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from pipelines import cli_data, cli_pipeline
from pipelines.cli_data import fail
from serving.health import HEALTH_NICE, KEEP_ALIVE_S, WORKER_NICE

app = typer.Typer(
    help="recsys: learn item and user embeddings from interaction logs, track runs in MLflow, serve top-k.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(cli_data.app, name="data")
experiments_app = typer.Typer(help="Compare MLflow runs of an experiment.", no_args_is_help=True)
app.add_typer(experiments_app, name="experiments")
app.add_typer(cli_pipeline.app, name="pipeline")


@app.command()
def train(
    config: Path = typer.Option(..., "--config", "-c", help="Run config TOML (see experiments/configs/)."),
    out: Path = typer.Option(Path("runs"), help="Folder for the trained model and reports."),
) -> None:
    """Load data -> split -> fit (validating every epoch) -> test -> log one MLflow run."""
    from pipelines.config import load_run_config
    from pipelines.train import train_run

    try:
        cfg = load_run_config(config)
        result = train_run(cfg, out, echo=typer.echo)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo(result.summary())


@app.command()
def tune(
    config: Path = typer.Option(..., "--config", "-c", help="Run config TOML: the data and the model's fixed "
                                "parameters; the model's declared search space overrides the searched ones, "
                                "and a new study's first trial is this config's values."),
    trials: int = typer.Option(20, help="Finished trials (complete or pruned) the study should hold at the end."),
    minutes: float = typer.Option(0.0, help="Wall-clock budget of this call in minutes (0 = none)."),
    study: str = typer.Option("", help="Study name (default <experiment>-<run name>); rerun to continue it."),
    storage: str = typer.Option("", help="Optuna RDB URL (default sqlite:///optuna.db beside the MLflow store); "
                                "a database URL for a study shared by several machines."),
    jobs: int = typer.Option(1, help="Trials run at once (threads); keep 1 on 2 cores."),
    metric: str = typer.Option("ndcg_10", help="Validation metric to maximise; its per-epoch value drives pruning."),
    out: Path = typer.Option(Path("runs"), help="Folder for the prepared data and best_<model>.toml."),
    sampler: str = typer.Option("tpe", help="tpe (multivariate TPE) or gp (Gaussian-process Bayesian optimisation)."),
    refine: float = typer.Option(None, help="Share of the trials spent last on a greedy coordinate search from "
                                 "the best trial (each parameter in turn over its values, the most important first), "
                                 "in [0, 1); default 2/3; 0 = the sampler only.", show_default=False),
) -> None:
    """Search the model's hyperparameters on validation (Optuna TPE or GP, then coordinate moves from the best
    trial; pruning), each trial a nested MLflow run; resumable; prints the best config as a TOML table for a
    pipeline config."""
    from pipelines.config import load_run_config
    from pipelines.tune import tune as run_tune

    try:
        cfg = load_run_config(config)
        result = run_tune(cfg, out, trials=trials, minutes=minutes, storage=storage or None, study_name=study or None,
                          jobs=jobs, metric=metric, echo=typer.echo, sampler=sampler, refine=refine)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        fail(str(exc))
    typer.echo(result.summary())
    typer.echo(result.toml_path.read_text())


@app.command()
def evaluate(
    model: str = typer.Option(..., "--model", "-m", help="runs:/<run_id>/model (or a local model folder)."),
    split: str = typer.Option("test", help="test or valid."),
    out: Path = typer.Option(Path("runs"), help="Folder where the prepared data is (re)built."),
) -> None:
    """Evaluate a model logged by `recsys train`, given only its MLflow URI, on the data its config names."""
    from pipelines.train import evaluate_run_model

    try:
        metrics = evaluate_run_model(model, out, split)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo("  ".join(f"{split}_{k}={v:.4f}" for k, v in metrics.items() if k not in ("n_users", "n_skipped",
                                                                                       "n_masked_targets")))


@app.command()
def export(
    model: str = typer.Option(..., "--model", "-m", help="runs:/<run_id>/model (or a local model folder)."),
    dest: Path = typer.Option(..., "--out", help="Bundle folder to write (must not exist)."),
    runs: Path = typer.Option(Path("runs"), help="Folder where the prepared data is (re)built."),
    catalogue: Path | None = typer.Option(
        None, help="Catalogue file (.csv/.tsv/.parquet/.jsonl: item, title, categories, tags; lists '|'-separated "
        "in CSV). Items the model was not trained on are added with vectors from their content by the trained "
        "item tower (two-tower models with features), without retraining; the manifest lists them."),
    content_cache: Path | None = typer.Option(
        None, help="Text-vector cache for --catalogue (default: the model config's content_cache)."),
) -> None:
    """Export a model logged by `recsys train`, given only its MLflow URI, as a servable bundle."""
    from pipelines.train import export_run_model

    try:
        path = export_run_model(model, dest, runs, catalogue, content_cache)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        fail(str(exc))
    typer.echo(f"wrote {path}")


@experiments_app.command("compare")
def experiments_compare(
    experiment: str = typer.Option("", "--experiment", "-e", help="MLflow experiment name."),
    study: str = typer.Option("", help="A `recsys tune` study instead: its trials table, optimisation history and "
                              "parameter importances (PNG)."),
    storage: str = typer.Option("", help="The study's Optuna storage URL (default: optuna.db beside the MLflow "
                                "store)."),
    metric: str = typer.Option("test_ndcg_10", help="Metric to sort by (best first)."),
    metrics: str = typer.Option("", help="Comma-separated metrics for the terminal table (default: the sort "
                                "metric, test_hr_10, test_ndcg_10, val_ndcg_10)."),
    include_pipeline: bool = typer.Option(False, "--include-pipeline", help="Also list pipeline parent runs."),
    width: int = typer.Option(120, help="Terminal table width in characters."),
    out: Path = typer.Option(Path("experiments/reports"), help="Folder for the CSV, Markdown and PNG."),
) -> None:
    """Print the model runs best first (chosen metrics, params that differ) and write CSV/Markdown/PNG.

    The CSV and Markdown keep every param and metric; the PNGs are the validation curves per epoch, the test
    metrics as bars (protocol in the caption) and the training curves."""
    from pipelines import compare as cmp

    if study:
        _compare_study(study, storage, width, out)
        return
    if not experiment:
        fail("give --experiment NAME (MLflow runs) or --study NAME (a recsys tune study)")
    try:
        chosen = tuple(m.strip() for m in metrics.split(",") if m.strip()) or None
        c = cmp.compare(experiment, metric, metrics=chosen, include_pipeline=include_pipeline)
    except ValueError as exc:
        fail(str(exc))
    typer.echo(cmp.to_text(c, width))
    for p in cmp.write_reports(c, out, experiment, metric):
        typer.echo(f"wrote {p}")


def _compare_study(name: str, storage: str, width: int, out: Path) -> None:
    from pipelines import study_report
    from pipelines.tune import default_storage

    try:
        st = study_report.load_study(name, storage or default_storage())
    except ValueError as exc:
        fail(str(exc))
    rows = study_report.trial_rows(st)
    typer.echo(study_report.to_text(st, rows, width))
    for p in study_report.write_study_reports(st, rows, out):
        typer.echo(f"wrote {p}")


@app.command()
def serve(
    path: Path = typer.Argument(..., help="A bundle folder or a publish root (its `current` bundle is served)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; 127.0.0.1 keeps it local."),
    port: int = typer.Option(8000, help="TCP port."),
    reload_interval: float = typer.Option(2.0, help="Seconds between checks of `current` for a new bundle."),
    workers: int = typer.Option(1, min=1, help="Server processes on the port (on Linux each "
                                 "with its own SO_REUSEPORT socket, so connections spread over them)."),
    lookup_threads: int = typer.Option(4, min=1, help="Lookups running at once in each worker."),
    blas_threads: int = typer.Option(1, min=1, help="BLAS threads per worker (one query is a small product)."),
    health_port: int = typer.Option(0, min=0, help="Also answer /healthz and /readyz on this port, from a separate "
                                    "process fed by the workers' heartbeats, so probes stay fast when the workers "
                                    "are saturated (0 = off; the main port answers them too)."),
    worker_nice: int = typer.Option(WORKER_NICE, min=0, max=19,
                                    help="With --health-port: niceness added to the workers, so the health process "
                                    "is scheduled first on saturated cores (0 = same priority). Up to 19 favours "
                                    "probes more on a host that serves only; on a shared host the workers then get "
                                    "little CPU against other jobs."),
    health_nice: int = typer.Option(HEALTH_NICE, min=-20, max=0,
                                    help="With --health-port: niceness the health process sets itself to where "
                                    "permitted (root or CAP_SYS_NICE), so it is scheduled ahead of other processes "
                                    "on the host too (0 = the caller's; without the permission it keeps the "
                                    "caller's and logs why)."),
    keep_alive: float = typer.Option(KEEP_ALIVE_S, min=0.001, help="Seconds an idle keep-alive connection stays open "
                                     "(uvicorn's default 5; behind a load balancer, set it above the balancer's idle "
                                     "timeout)."),
) -> None:
    """Serve top-k lookups over HTTP (FastAPI + uvicorn); OpenAPI docs at /docs.

    Lookups that can take long run in a thread pool, off the event loop, so /healthz answers while they
    run; the bounds on the work one request can cause are in the README ("Serving")."""
    from serving.__main__ import limit_blas_threads
    from serving.http import run

    limit_blas_threads(blas_threads)
    run(str(path), host=host, port=port, reload_interval=reload_interval, workers=workers,
        lookup_threads=lookup_threads, health_port=health_port, worker_nice=worker_nice,
        health_nice=health_nice, keep_alive=keep_alive)


@app.command("serve-model")
def serve_model(
    model: str = typer.Option("models:/recsys@champion", "--model", "-m", help="MLflow model URI to serve."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; 127.0.0.1 keeps it local."),
    port: int = typer.Option(5001, help="TCP port."),
    workers: int = typer.Option(1, min=1, help="Server processes."),
) -> None:
    """Serve an MLflow pyfunc model (the champion by default) with `mlflow models serve --env-manager local`,
    from this environment: POST /invocations. Works from a cron line or systemd unit that calls this
    environment's `recsys` by path (mlflow starts `uvicorn` from PATH; this puts the environment's bin first)."""
    import os
    import sys

    from pipelines import tracking

    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    env.setdefault("MLFLOW_TRACKING_URI", tracking.tracking_uri())
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model, "--env-manager", "local",
           "--host", host, "--port", str(port), "--workers", str(workers)]
    os.execve(sys.executable, cmd, env)


def main() -> None:
    import os
    import sys

    if not sys.stderr.isatty():  # a cron log: no per-file progress bars from MLflow's artifact downloads
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
