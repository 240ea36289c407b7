"""The scheduled pipeline end to end: publish, gate, lock, crash + resume, rollback, incremental logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from pipelines import tracking
from pipelines.pipeline import run_pipeline
from pipelines.pipeline_config import load_pipeline_config
from pipelines.runstate import ExitCode, LockedError, PipelineExit, run_lock
from recsys.config import ConfigError
from recsys.prepare.idmap import IdMap
from serving import Recommender

DATA = 'synthetic_users = 300\nsynthetic_items = 120\nsynthetic_events = 6000\n'


def write_config(tmp: Path, models: str, pipeline: str = "", data: str = DATA, name: str = "p.toml") -> Path:
    text = f'[pipeline]\nworkdir = "wd"\nbundles = "pub"\n{pipeline}\n[data]\n{data}\n{models}\n'
    (tmp / name).write_text(textwrap.dedent(text))
    return tmp / name


ALS = '[models.als]\nfactors = 16\niterations = 4\n'
POP = '[models.pop]\nname = "popularity"\n'


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def quiet(_: str) -> None:
    pass


def test_end_to_end_publishes_a_servable_bundle_and_logs_nested_runs(workdir: Path) -> None:
    cfg = load_pipeline_config(write_config(workdir, POP + ALS))
    ctx = run_pipeline(cfg, echo=quiet)
    for step in ("ingest", "train", "evaluate", "export", "gate", "publish"):
        assert ctx.run.is_done(step)
    evaluated = ctx.run.info("evaluate")
    assert evaluated["candidate"] == "als"  # ALS beats popularity on planted structure, by more than one SE
    trained = {label: ctx.run.info(f"train-{label}") for label in ("pop", "als")}
    assert trained["als"]["capacity"] == 2 and trained["pop"]["capacity"] == 0
    lead = trained["als"]["val"]["ndcg_10"] - trained["pop"]["val"]["ndcg_10"]
    assert lead > trained["als"]["val"]["ndcg_10_se"] > 0
    assert "no simpler model within 1 SE" in evaluated["reason"]
    rec = Recommender.load(workdir / "pub")
    assert rec.manifest["model"] == "als:als"
    user = rec.bundle.users.ids[0].item()
    res = rec.recommend(user, k=5, exclude_seen=True)
    assert res.source == "model" and len(res.items) == 5
    seen = set(rec.bundle.items.ids[rec.bundle.seen(1) - 1].tolist())
    assert not seen & set(res.items)
    # the synthetic log has repeat consumption: by default lookups do what the run chose on validation
    assert rec.manifest["exclude_seen"] is ctx.run.info("train-als")["exclude_seen"]
    assert rec.recommend(user, k=5).items == rec.recommend(user, k=5, exclude_seen=rec.exclude_seen).items
    client = MlflowClient(tracking.tracking_uri())
    parent = client.get_run(ctx.parent_run_id)
    assert parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{ctx.parent_run_id}'")
    assert {c.data.tags["mlflow.runName"] for c in children} == {"pop", "als"}
    version = client.get_model_version_by_alias("recsys", "champion")
    assert str(version.version) == str(client.get_model_version_by_alias("recsys", "candidate").version) == "1"
    assert json.loads((workdir / "wd" / "champion.json").read_text())["version"] == "1"
    assert (ctx.run.path / "pipeline.log").stat().st_size > 0


# item2vec that cannot train: a learning rate so large that the first steps overflow, and no backoff allowed
BROKEN = '[models.i2v]\nname = "item2vec"\ndim = 8\nepochs = 1\nlr = 1e30\nmin_lr = 0.0\nmax_backoffs = 0\n'


def test_a_model_that_fails_to_train_does_not_stop_the_run(workdir: Path) -> None:
    from pipelines.history import format_history, run_history
    from pipelines.status import format_status, pipeline_status

    cfg = load_pipeline_config(write_config(workdir, POP + BROKEN + ALS))
    ctx = run_pipeline(cfg, echo=quiet)
    assert ctx.run.is_done("publish") and ctx.run.info("evaluate")["candidate"] == "als"
    info = ctx.run.info("train-i2v")
    assert info["failed"] and info["error"].startswith("NaNLossError: item2vec diverged at epoch 1, step ")
    assert ctx.run.info("train")["failed"] == ["i2v"]
    client = MlflowClient(tracking.tracking_uri())
    failed = client.get_run(info["run_id"])
    assert failed.info.status == "FAILED" and failed.data.tags["mlflow.runName"] == "i2v"
    assert failed.data.tags["error"].startswith("NaNLossError: item2vec diverged")
    assert client.get_run(ctx.run.info("train-als")["run_id"]).info.status == "FINISHED"
    status = pipeline_status(cfg, check_registry=False)
    assert status["runs"][0]["outcome"] == "published" and list(status["runs"][0]["failed_models"]) == ["i2v"]
    assert "model i2v failed to train: NaNLossError" in format_status(status)
    assert "candidate als: highest validation ndcg_10" in format_status(status)
    assert "failed: i2v; " in format_history(run_history(workdir / "wd"))


def test_no_model_trained_ends_the_run_with_exit_code_5_and_keeps_the_champion(workdir: Path) -> None:
    run_pipeline(load_pipeline_config(write_config(workdir, ALS)), echo=quiet)
    champion_before = os.readlink(workdir / "pub" / "current")
    cfg = load_pipeline_config(write_config(workdir, BROKEN, name="broken.toml"))
    with pytest.raises(PipelineExit) as err:
        run_pipeline(cfg, echo=quiet)
    assert err.value.code == ExitCode.NO_MODEL == 5 and "no model trained" in str(err.value)
    assert "i2v: NaNLossError" in str(err.value)
    assert os.readlink(workdir / "pub" / "current") == champion_before
    runs = sorted((workdir / "wd" / "runs").iterdir())
    assert json.loads((runs[-1] / "ended.json").read_text())["outcome"] == "no_model_trained"


def test_models_are_validated_before_anything_runs(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bf16 two-tower on a CPU without native bf16 (or an unknown key) stops the run before ingest, naming the
    model and the fix, not after the other models trained."""
    import recsys.device

    monkeypatch.setattr(recsys.device, "bf16_supported", lambda device: False)
    tt = '[models.tt]\nname = "two_tower"\nprecision = "bf16"\n'
    cfg = load_pipeline_config(write_config(workdir, ALS + tt))
    with pytest.raises(PipelineExit) as err:
        run_pipeline(cfg, echo=quiet)
    assert err.value.code == ExitCode.USAGE and "[models.tt]" in str(err.value)
    assert "no native bf16; set precision = \"fp32\"" in str(err.value)
    assert not (workdir / "wd" / "runs").exists()  # nothing ingested, nothing trained
    typo = load_pipeline_config(write_config(workdir, ALS.replace("factors", "factor"), name="typo.toml"))
    with pytest.raises(PipelineExit, match=r"unknown key\(s\) \['factor'\] in .*typo.toml \[models.als\]"):
        run_pipeline(typo, echo=quiet)


def test_a_model_stops_at_its_time_budget_and_the_run_records_why(workdir: Path) -> None:
    budget = ALS.replace("iterations = 4", "iterations = 50") + "max_minutes = 1e-9\n"
    cfg = load_pipeline_config(write_config(workdir, POP + budget))
    assert cfg.models[1].max_minutes == 1e-9 and "max_minutes" not in cfg.models[1].params
    lines: list[str] = []
    ctx = run_pipeline(cfg, echo=lines.append)
    info = ctx.run.info("train-als")
    assert info["stop_reason"].startswith("time budget of 1e-09 min reached after epoch 1")
    assert ctx.run.info("train-pop")["stop_reason"] == "completed" and ctx.run.is_done("publish")
    client = MlflowClient(tracking.tracking_uri())
    assert client.get_run(info["run_id"]).data.tags["stop_reason"] == info["stop_reason"]
    assert [m.step for m in client.get_metric_history(info["run_id"], "train_epoch_seconds")] == [1]
    assert any(line.startswith("  [als] epoch 1/50") for line in lines)
    assert any(line.startswith("  [als] stopped: time budget") for line in lines)
    with pytest.raises(ConfigError, match="max_minutes must be a number of minutes >= 0"):
        load_pipeline_config(write_config(workdir, ALS + 'max_minutes = "soon"\n', name="bad.toml"))


def test_eval_max_users_scores_one_seeded_sample_in_training_and_at_the_gate(workdir: Path) -> None:
    path = write_config(workdir, POP + ALS, pipeline='publish = "pop"')
    path.write_text(path.read_text() + "[eval]\nmax_users = 40\n")
    ctx = run_pipeline(load_pipeline_config(path), echo=quiet)
    trained = ctx.run.info("train-pop")
    assert trained["val"]["n_users"] == trained["test"]["n_users"] == 40  # of the 300 users with targets
    gate = json.loads((ctx.run.path / "gate.json").read_text())
    assert gate["candidate_metrics"]["n_users"] == 40
    # the popularity bundle ranks as its run did: the gate scored the same 40 test users to the same figure
    assert ctx.run.info("evaluate")["candidate"] == "pop"
    assert gate["candidate_metrics"]["ndcg_10"] == pytest.approx(trained["test"]["ndcg_10"], abs=1e-6)
    assert gate["candidate_metrics"]["popularity_10"] == pytest.approx(trained["test"]["popularity_10"], rel=1e-6)
    params = MlflowClient(tracking.tracking_uri()).get_run(trained["run_id"]).data.params
    assert params["eval_max_users"] == "40" and params["eval_sample_seed"] == "42"
    with pytest.raises(ConfigError, match="max_users must be a whole number of users >= 0"):
        bad = write_config(workdir, POP, name="bad.toml")
        bad.write_text(bad.read_text() + "[eval]\nmax_users = -5\n")
        load_pipeline_config(bad)


def test_gate_rejects_a_worse_candidate_and_keeps_the_champion(workdir: Path) -> None:
    run_pipeline(load_pipeline_config(write_config(workdir, ALS)), echo=quiet)
    champion_before = os.readlink(workdir / "pub" / "current")
    worse = load_pipeline_config(write_config(workdir, POP, pipeline="tolerance = 0.0", name="worse.toml"))
    with pytest.raises(PipelineExit) as err:
        run_pipeline(worse, echo=quiet)
    assert err.value.code == ExitCode.GATE_REJECTED
    assert os.readlink(workdir / "pub" / "current") == champion_before
    runs = sorted((workdir / "wd" / "runs").iterdir())
    gate = json.loads((runs[-1] / "gate.json").read_text())
    assert not gate["promote"] and gate["candidate"] < gate["champion"]
    assert json.loads((runs[-1] / "ended.json").read_text())["outcome"] == "rejected"
    client = MlflowClient(tracking.tracking_uri())
    assert str(client.get_model_version_by_alias("recsys", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("recsys", "candidate").version) == "2"
    # the next run starts fresh (the rejected run has ended) and a good model is published again
    ctx = run_pipeline(load_pipeline_config(write_config(workdir, ALS)), echo=quiet)
    assert ctx.run.path != runs[-1] and ctx.run.is_done("publish")
    # `recsys pipeline history`: each run's candidate, gate metric against the champion, decision and reason
    out = _cli(["pipeline", "history", "-c", "p.toml", "--png", "history.png", "--json"])
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout[: out.stdout.rindex("]") + 1])
    assert [r["outcome"] for r in rows] == ["published", "rejected", "published"]
    assert [r["candidate"] for r in rows] == ["als", "pop", "als"]
    assert rows[0]["champion_value"] is None and rows[1]["candidate_value"] < rows[1]["champion_value"]
    assert "worse than the champion" in rows[1]["reason"] and (workdir / "history.png").stat().st_size > 0
    table = _cli(["pipeline", "history", "-c", "p.toml"]).stdout
    assert max(map(len, table.splitlines())) <= 120 and "rejected" in table and "published" in table


def test_a_concurrent_run_is_refused(workdir: Path) -> None:
    cfg = load_pipeline_config(write_config(workdir, POP))
    with run_lock(workdir / "wd"), pytest.raises(LockedError, match="another pipeline run holds"):
        run_pipeline(cfg, echo=quiet)
    proc = subprocess.Popen([sys.executable, "-c", "import fcntl,time,sys; f=open('wd/pipeline.lock','a');"
                             "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        out = _cli(["pipeline", "run", "-c", "p.toml"])
        assert out.returncode == ExitCode.LOCKED and "another pipeline run holds" in out.stderr
    finally:
        proc.kill()


def test_bad_data_stops_the_run_with_the_data_exit_code(workdir: Path) -> None:
    rows = ["user,item,timestamp"] + [f"u{i % 7},i{i % 11},{1_600_000_000 + i}" for i in range(60)]
    rows += [f"u{i},,not-a-time" for i in range(20)]  # 25% bad rows
    (workdir / "log.csv").write_text("\n".join(rows) + "\n")
    write_config(workdir, POP, data='path = "log.csv"\nmax_bad_fraction = 0.5\n',
                 pipeline="max_bad_fraction = 0.1")
    out = _cli(["pipeline", "run", "-c", "p.toml"])
    assert out.returncode == ExitCode.DATA_CHECK_FAILED, out.stderr
    assert "quarantined" in out.stderr and not (workdir / "pub").exists()


def _cli(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                          timeout=600, **kw)


def _crash_at(point: str) -> str:
    """Run the CLI with a crash-injection point; it must die from SIGKILL there. Returns its stdout."""
    out = _cli(["pipeline", "run", "-c", "p.toml"], env={**os.environ, "RECSYS_FAULT_POINT": point})
    assert out.returncode == -signal.SIGKILL, (out.returncode, out.stderr[-2000:])
    return out.stdout


@pytest.mark.slow
def test_killed_during_training_and_during_export_resumes_and_never_publishes_half(workdir: Path) -> None:
    write_config(workdir, POP + ALS)
    runs = workdir / "wd" / "runs"
    _crash_at("trained-als")  # killed after ALS finished fitting, before its marker: ALS is redone
    assert not (workdir / "pub").exists()
    (run_dir,) = list(runs.iterdir())
    assert (run_dir / "ingest.done").is_file() and (run_dir / "train-pop.done").is_file()
    assert not (run_dir / "train-als.done").exists()
    resumed = _crash_at("exported")  # killed after the bundle was written, before registration and the marker
    assert "[ingest] already done" in resumed and "pop: already trained" in resumed
    assert (run_dir / "train.done").is_file() and not (run_dir / "export.done").exists()
    assert not (workdir / "pub").exists()
    (run_dir / ".bundle.tmp-deadbeef").mkdir()  # what a kill in the middle of writing leaves behind
    (run_dir / ".bundle.tmp-deadbeef" / "items.ann").write_bytes(b"half")
    out = _cli(["pipeline", "run", "-c", "p.toml"])
    assert out.returncode == 0, out.stderr
    assert "[ingest] already done" in out.stdout and "[train] already done" in out.stdout
    assert "[export] started" in out.stdout
    assert len(list(runs.iterdir())) == 1
    rec = Recommender.load(workdir / "pub")  # verifies every file's sha256 against the manifest
    assert rec.manifest["counts"]["items"] > 0
    assert not list(run_dir.glob(".bundle.tmp-*"))  # the partial folder was cleaned up, never published


@pytest.mark.slow
def test_rollback_restores_the_previous_bundle_for_a_running_server(workdir: Path) -> None:
    import httpx

    run_pipeline(load_pipeline_config(write_config(workdir, ALS)), echo=quiet)
    first = os.readlink(workdir / "pub" / "current")
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "pub", "--port", str(port),
                               "--reload-interval", "0.2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(lambda: httpx.get(f"{url}/readyz").status_code == 200)
        assert httpx.get(f"{url}/v1/model").json()["model"] == "als:als"
        run_pipeline(load_pipeline_config(write_config(workdir, POP, pipeline="tolerance = 1.0")), echo=quiet)
        _wait(lambda: httpx.get(f"{url}/v1/model").json()["model"] == "pop:popularity")
        out = _cli(["pipeline", "rollback", "-c", "p.toml"])
        assert out.returncode == 0, out.stderr
        assert os.readlink(workdir / "pub" / "current") == first
        _wait(lambda: httpx.get(f"{url}/v1/model").json()["model"] == "als:als")
        assert json.loads((workdir / "wd" / "champion.json").read_text())["version"] == "1"
    finally:
        server.terminate()
        server.wait(timeout=30)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if cond():
                return
        except Exception:  # noqa: BLE001 - the server may not be up yet
            pass
        time.sleep(0.2)
    raise TimeoutError("condition not met in time")


@pytest.mark.parametrize("engine", ["memory", "outofcore"])
def test_incremental_log_folder_appends_new_files_and_keeps_ids_stable(workdir: Path, engine: str) -> None:
    rng = np.random.default_rng(0)
    logs = workdir / "logs"
    logs.mkdir()

    def write_log(name: str, users: range, t0: int) -> None:
        n = len(users) * 8
        pl.DataFrame({"user": np.repeat([f"u{u}" for u in users], 8), "item": [f"i{x}" for x in rng.integers(0, 40, n)],
                      "timestamp": t0 + np.arange(n)}).write_csv(logs / name)

    write_log("day1.csv", range(0, 40), 1_600_000_000)
    cfg = load_pipeline_config(write_config(workdir, POP, data=f'path = "logs"\nmin_length = 3\nengine = "{engine}"\n',
                                            pipeline="tolerance = 1.0"))
    first = run_pipeline(cfg, echo=quiet)
    users1 = IdMap.load(first.run.path / "data" / "user_ids.parquet")
    write_log("day2.csv", range(30, 60), 1_700_000_000)
    second = run_pipeline(cfg, echo=quiet)
    users2 = IdMap.load(second.run.path / "data" / "user_ids.parquet")
    assert users2.ids[: len(users1)].to_list() == users1.ids.to_list()  # known users keep their index
    assert len(users2) == 60
    files = json.loads((workdir / "wd" / "logs" / "files.json").read_text())
    assert sorted(files["files"]) == ["day1.csv", "day2.csv"] and files["run_id"] == second.run.run_id
    assert files["previous_rows"] == 40 * 8 and sorted(files["previous_files"]) == ["day1.csv"]
    assert second.run.info("ingest")["n_events"] == (40 + 30) * 8
    assert second.run.info("ingest")["checks"]["new_rows_read"] == 30 * 8
    assert len(files["parts"]) == 2 and files["previous_parts"] == files["parts"][:1]


def test_ingest_check_judges_the_new_rows_alone(workdir: Path) -> None:
    logs = workdir / "logs"
    logs.mkdir()
    good = [f"u{i % 50},i{i % 37},{1_600_000_000 + i}" for i in range(1000)]
    (logs / "day1.csv").write_text("\n".join(["user,item,timestamp", *good]) + "\n")
    cfg = load_pipeline_config(write_config(workdir, POP, data='path = "logs"\nmax_bad_fraction = 0.9\n',
                                            pipeline="tolerance = 1.0\nmax_bad_fraction = 0.1"))
    run_pipeline(cfg, echo=quiet)
    # 15 bad rows of 50 new ones: 30% of this run's rows, 1.4% of everything read so far
    day2 = [f"u{i % 50},i{i % 37},{1_700_000_000 + i}" for i in range(35)] + [f"u{i},,bad" for i in range(15)]
    (logs / "day2.csv").write_text("\n".join(["user,item,timestamp", *day2]) + "\n")
    with pytest.raises(PipelineExit, match="30.0% of this run's 50 new rows were quarantined") as err:
        run_pipeline(cfg, echo=quiet)
    assert err.value.code == ExitCode.DATA_CHECK_FAILED
    state = json.loads((workdir / "wd" / "logs" / "files.json").read_text())
    assert sorted(state["files"]) == ["day1.csv"]  # nothing committed: the next run sees day2.csv again


@pytest.mark.parametrize("scoring", ["in-in", "in-out"])
def test_second_run_warm_starts_item2vec_from_the_champion(workdir: Path, scoring: str) -> None:
    i2v = f'[models.i2v]\nname = "item2vec"\ndim = 8\nepochs = 1\nscoring = "{scoring}"\n'
    cfg = load_pipeline_config(write_config(workdir, i2v, pipeline="tolerance = 1.0"))
    first = run_pipeline(cfg, echo=quiet)
    champion = Recommender.load(workdir / "pub")
    lines: list[str] = []
    second = run_pipeline(cfg, echo=lines.append)
    assert any("i2v: warm start from the champion" in line for line in lines)
    init = np.load(second.run.path / "warm_start" / "i2v.npy")
    # same data and stable ids: row j of the warm start is the champion's input vector of item j: its item
    # vector under in-in, its encoder's table under in-out (the bundle's item vectors are output vectors)
    assert first.run.path != second.run.path
    bundle = champion.bundle
    want = bundle.item_vectors if scoring == "in-in" else np.load(bundle.path / "encoder_item_table.npy")
    np.testing.assert_array_equal(init[1:], np.asarray(want)[1:])
    if scoring == "in-out":
        assert not np.allclose(init[1:], np.asarray(bundle.item_vectors)[1:])


def test_on_a_log_of_repeat_consumption_the_run_keeps_seen_items_and_serving_follows(workdir: Path) -> None:
    # every user cycles through 3 items of their own: the validation and test targets were all seen before
    rng = np.random.default_rng(3)
    rows = []
    for u in range(150):
        mine = rng.choice(40, 3, replace=False)
        rows += [(f"u{u}", f"i{mine[t % 3]}", 1_600_000_000 + t) for t in range(9)]
    (workdir / "logs").mkdir()
    pl.DataFrame(rows, schema=["user", "item", "timestamp"], orient="row").write_csv(workdir / "logs" / "day1.csv")
    ctx = run_pipeline(load_pipeline_config(write_config(workdir, POP, data='path = "logs"\nmin_length = 3\n')),
                       echo=quiet)
    trained = ctx.run.info("train-pop")
    assert trained["exclude_seen"] is False and trained["val"]["ndcg_10"] > 0
    rec = Recommender.load(workdir / "pub")
    assert rec.manifest["exclude_seen"] is False
    gate = json.loads((ctx.run.path / "gate.json").read_text())
    assert gate["candidate_metrics"]["ndcg_10"] > 0  # judged as served: seen items stay candidates
    user = rec.recommend("u0", k=40)
    seen = set(rec.bundle.items.raw(rec.bundle.seen(int(rec.bundle.users.lookup(["u0"])[0]))))
    assert seen <= set(user.items)  # by default, as decided
    assert not seen & set(rec.recommend("u0", k=40, exclude_seen=True).items)  # a request can still ask
    run = MlflowClient().get_run(trained["run_id"])
    assert run.data.tags["exclude_seen"] == "false"
    assert run.data.metrics["val_ndcg_10_keep_seen"] > run.data.metrics["val_ndcg_10_exclude_seen"] == 0


def test_on_a_log_without_repeats_seen_items_stay_excluded(workdir: Path) -> None:
    rng = np.random.default_rng(4)  # every user consumes 8 distinct items: no target was seen before
    rows = [(f"u{u}", f"i{i}", 1_600_000_000 + t) for u in range(150)
            for t, i in enumerate(rng.choice(40, 8, replace=False))]
    (workdir / "logs").mkdir()
    pl.DataFrame(rows, schema=["user", "item", "timestamp"], orient="row").write_csv(workdir / "logs" / "day1.csv")
    ctx = run_pipeline(load_pipeline_config(write_config(workdir, POP, data='path = "logs"\nmin_length = 3\n')),
                       echo=quiet)
    assert ctx.run.info("train-pop")["exclude_seen"] is True
    assert Recommender.load(workdir / "pub").manifest["exclude_seen"] is True


def _markov_logs(logs: Path, n_users: int = 200, n_items: int = 60, day1: int = 12, day2: int = 10) -> None:
    """Two days of a sequential log: items follow a fixed cycle (next = succ[prev]) with probability 0.85,
    else a popular item (Zipf). Day 2 continues each user's walk, so the newest events decide the target."""
    rng = np.random.default_rng(7)
    succ = rng.permutation(n_items)
    zipf = 1.0 / np.arange(1, n_items + 1) ** 1.2
    zipf /= zipf.sum()
    walks = np.zeros((n_users, day1 + day2), dtype=np.int64)
    walks[:, 0] = rng.choice(n_items, n_users, p=zipf)
    for t in range(1, day1 + day2):
        jump = rng.random(n_users) >= 0.85
        walks[:, t] = np.where(jump, rng.choice(n_items, n_users, p=zipf), succ[walks[:, t - 1]])
    for name, cols, t0 in (("day1.csv", slice(0, day1), 1_600_000_000), ("day2.csv", slice(day1, None), 1_700_000_000)):
        part = walks[:, cols]
        pl.DataFrame({"user": np.repeat([f"u{u}" for u in range(n_users)], part.shape[1]),
                      "item": [f"i{x}" for x in part.ravel()],
                      "timestamp": t0 + np.tile(np.arange(part.shape[1]), n_users)}).write_csv(logs / name)


TT = ('[models.tt]\nname = "two_tower"\ndim = 32\nmax_len = 10\nepochs = 15\nbatch_size = 32\nlr = 0.01\n'
      'dropout = 0.1\nwarmup_steps = 10\n')


def test_second_run_warm_starts_the_two_tower_from_the_champions_run(workdir: Path) -> None:
    import torch

    from recsys.models.two_tower.checkpoint import load_tensors

    logs = workdir / "logs"
    logs.mkdir()
    _markov_logs(logs)
    (logs / "day2.csv").rename(workdir / "day2.csv")  # the log grows between the runs
    tt = TT.replace("epochs = 15", "epochs = 6\nwarm_epochs = 2")
    cfg = load_pipeline_config(write_config(workdir, tt, pipeline="tolerance = 1.0",
                                            data='path = "logs"\nmin_length = 3\n'))
    first = run_pipeline(cfg, echo=quiet)
    (workdir / "day2.csv").rename(logs / "day2.csv")
    lines: list[str] = []
    second = run_pipeline(cfg, echo=lines.append)
    assert any("tt: warm start from the champion" in line for line in lines)
    old = load_tensors(Path(first.run.info("train-tt")["model_dir"]) / "weights")
    init = load_tensors(second.run.path / "warm_start" / "tt")
    # stable id maps: the items of day 1 keep their rows; every non-item weight is the champion's
    n_old = old["item.id_emb.weight"].shape[0]
    torch.testing.assert_close(init["item.id_emb.weight"][:n_old], old["item.id_emb.weight"], rtol=0, atol=0)
    assert torch.isnan(init["item.id_emb.weight"][n_old:]).all()  # items new on day 2: their own random init
    for key in (k for k in old if k.startswith("user.")):
        torch.testing.assert_close(init[key], old[key], rtol=0, atol=0)
    epochs = MlflowClient().get_metric_history(second.run.info("train-tt")["run_id"], "train_loss")
    assert 1 <= len(epochs) <= 2  # warm_epochs; the first run trained up to 6


def test_served_vectors_include_the_last_event_and_recent_events_change_the_answer(workdir: Path) -> None:
    from fastapi.testclient import TestClient

    from serving.http import create_app

    logs = workdir / "logs"
    logs.mkdir()
    _markov_logs(logs)
    ctx = run_pipeline(load_pipeline_config(write_config(workdir, TT, data='path = "logs"\nmin_length = 3\n')),
                       echo=quiet)
    rec = Recommender.load(workdir / "pub")
    log = pl.concat([pl.read_csv(logs / n) for n in ("day1.csv", "day2.csv")]).sort("user", "timestamp")
    last = dict(log.group_by("user", maintain_order=True).agg(pl.col("item").last()).iter_rows())
    for user in ("u0", "u1", "u17"):
        u = int(rec.bundle.users.lookup([user])[0])
        hist = rec.bundle.history(u)
        assert rec.bundle.items.raw(hist[-1:]) == [last[user]]  # the stored history ends with the newest event
        np.testing.assert_allclose(rec.bundle.user_vectors[u], rec.bundle.encoder.encode(hist), atol=1e-5)
        assert not np.allclose(rec.bundle.user_vectors[u], rec.bundle.encoder.encode(hist[:-1]), atol=1e-3)
    assert rec.manifest["encoder"]["kind"] == "transformer" and ctx.run.is_done("publish")
    with TestClient(create_app(workdir / "pub", reload_interval=0)) as http:
        stored = http.get("/v1/recommend", params={"user_id": "u3", "k": 10}).json()
        events = stored["items"][:2]  # the user just consumed the two items we would have shown
        fresh = http.post("/v1/recommend", json={"user_id": "u3", "history": events, "k": 10,
                                                 "exclude_seen": True}).json()
    assert stored["source"] == "model" and fresh["source"] == "fresh"
    assert fresh["items"] != stored["items"] and not set(events) & set(fresh["items"])
    direct = rec.recommend("u3", k=10, history=events, exclude_seen=True)
    assert fresh["items"] == direct.items


def test_gate_judges_both_bundles_by_their_own_encoder_on_the_grown_log(workdir: Path) -> None:
    """The champion (a Transformer two-tower) is the better model on the grown log, but its stored user
    vectors predate day 2; the old gate scored it with them and would have promoted a popularity candidate."""
    from pipelines.gate import align_rows
    from recsys.evaluation.evaluator import EvalProtocol, evaluate
    from recsys.prepare.format import load_prepared

    logs = workdir / "logs"
    logs.mkdir()
    _markov_logs(logs)
    (logs / "day2.csv").rename(workdir / "day2.csv")  # day 2 arrives before the second run
    data = 'path = "logs"\nmin_length = 3\n'
    first = run_pipeline(load_pipeline_config(write_config(workdir, TT, data=data)), echo=quiet)
    champion_bundle = Path(os.readlink(workdir / "pub" / "current"))
    champion_bundle = champion_bundle if champion_bundle.is_absolute() else workdir / "pub" / champion_bundle
    (workdir / "day2.csv").rename(logs / "day2.csv")
    cfg = load_pipeline_config(write_config(workdir, POP, data=data, pipeline="tolerance = 0.0", name="pop.toml"))
    with pytest.raises(PipelineExit) as err:
        run_pipeline(cfg, echo=quiet)
    assert err.value.code == ExitCode.GATE_REJECTED
    runs = sorted((workdir / "wd" / "runs").iterdir())
    gate = json.loads((runs[-1] / "gate.json").read_text())
    assert not gate["promote"] and gate["champion"] > gate["candidate"] + 0.1
    assert gate["champion_metrics"]["gate_fallback_users"] == 0 and gate["champion_metrics"]["gate_unknown_items"] == 0
    # the old gate: the champion's stored user vectors (encoded at its export from day 1 alone)
    new = load_prepared(runs[-1] / "data", "logs")
    stored = Recommender.load(champion_bundle, verify=False).bundle
    users = align_rows(np.asarray(stored.user_vectors), stored.users.ids, new.users)
    items = align_rows(np.asarray(stored.item_vectors), stored.items.ids, new.items)
    old = evaluate(users, items, new.split.test_history, new.split.test_targets, EvalProtocol(ks=(10, 20)))
    assert old["ndcg_10"] < gate["candidate"], "the old gate would have kept the champion: the case is not shown"
    assert first.run.info("gate")["promote"]


def _fault_points(label: str) -> list[str]:
    from pipelines.steps import FAULT_POINTS

    return [p.format(label=label) for p in FAULT_POINTS]


class _Prober:
    """Queries a `recsys serve` process on loopback without pause from a thread; records every failure."""

    def __init__(self, url: str, user: str) -> None:
        import threading

        self.url, self.user, self.ok, self.failures, self.served = url, user, 0, [], set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        import httpx

        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                try:
                    r = client.get(f"{self.url}/v1/recommend", params={"user_id": self.user, "k": 5})
                    ready = client.get(f"{self.url}/readyz")
                    bundle = client.get(f"{self.url}/v1/model").json()["bundle"]
                    if r.status_code != 200 or len(r.json()["items"]) != 5 or ready.status_code != 200:
                        self.failures.append((r.status_code, r.text[:200], ready.status_code))
                    else:
                        self.ok += 1
                        self.served.add(bundle)
                except Exception as exc:  # noqa: BLE001 - any transport error is a failure to report
                    self.failures.append(repr(exc))
                time.sleep(0.02)

    def __enter__(self) -> _Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("point", _fault_points("pop"))
def test_killed_at_every_fault_point_the_rerun_finishes_and_the_state_agrees(workdir: Path, point: str) -> None:
    """SIGKILL at each fault point of each step (four inside publish), rerun, then: current, champion.json,
    published.json, the registry aliases and the run markers agree, no MLflow run is left RUNNING, the log
    state holds each file once, and a server on the publish root answered every request meanwhile."""
    import httpx

    from pipelines.status import consistency

    logs = workdir / "logs"
    logs.mkdir()
    rng = np.random.default_rng(0)

    def write_log(name: str, users: range, t0: int) -> int:
        n = len(users) * 10
        pl.DataFrame({"user": np.repeat([f"u{u}" for u in users], 10),
                      "item": [f"i{x}" for x in rng.integers(0, 60, n)], "timestamp": t0 + np.arange(n)}
                     ).write_csv(logs / name)
        return n

    day1 = write_log("day1.csv", range(0, 60), 1_600_000_000)
    write_config(workdir, POP, data='path = "logs"\nmin_length = 3\n', pipeline="tolerance = 1.0\nkeep = 2")
    first = run_pipeline(load_pipeline_config(workdir / "p.toml"), echo=quiet)
    day2 = write_log("day2.csv", range(40, 90), 1_700_000_000)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "pub", "--port", str(port),
                               "--reload-interval", "0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: httpx.get(f"{url}/readyz").status_code == 200)
        with _Prober(url, "u1") as probe:
            _crash_at(point)
            wd, pub = workdir / "wd", workdir / "pub"
            killed_run = max((wd / "runs").iterdir()).name
            found = consistency(wd, pub)
            if point.startswith("publish-"):  # the window a kill inside publish leaves, until the rerun
                assert found and all("publish step did not finish" in p or "champion.json names" in p
                                     or "published.json ends" in p for p in found), found
            else:
                assert found == [], found
            out = _cli(["pipeline", "run", "-c", "p.toml", "--no-samples"])
            assert out.returncode == 0, out.stderr[-3000:]
            _wait(lambda: httpx.get(f"{url}/v1/model").json()["bundle"] == killed_run, timeout=30)
            time.sleep(0.5)
        assert probe.failures == [] and probe.ok > 10, probe.failures[:5]
        assert probe.served <= {first.run.run_id, killed_run}
    finally:
        server.terminate()
        server.wait(timeout=30)

    tracking.setup("pipeline")
    assert consistency(wd, pub, registered_model="recsys") == []
    champion = json.loads((wd / "champion.json").read_text())
    assert champion["run_id"] == killed_run and os.readlink(pub / "current") == f"bundles/{killed_run}"
    published = json.loads((wd / "published.json").read_text())["published"]
    assert [e["run_id"] for e in published] == [first.run.run_id, killed_run]  # appended once
    runs = sorted((wd / "runs").iterdir())
    assert len(runs) == 2 and all(json.loads((r / "ended.json").read_text())["outcome"] == "published" for r in runs)
    client = MlflowClient(tracking.tracking_uri())
    assert str(client.get_model_version_by_alias("recsys", "champion").version) == champion["version"] == "2"
    assert len(client.search_model_versions("name = 'recsys'")) == 2  # the rerun reused a registered version
    every = client.search_runs([client.get_experiment_by_name("pipeline").experiment_id])
    assert not [r.info.run_id for r in every if r.info.status == "RUNNING"]
    parent = client.get_run(json.loads((runs[-1] / "state.json").read_text())["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["outcome"] == "published"
    if point == "fitted-pop":
        killed = [r for r in every if r.info.status == "KILLED"]
        assert len(killed) == 1 and "resumed" in killed[0].data.tags["ended_reason"]
    state = json.loads((wd / "logs" / "files.json").read_text())
    assert sorted(state["files"]) == ["day1.csv", "day2.csv"]
    assert sum(pl.read_parquet(wd / "logs" / part).height for part in state["parts"]) == day1 + day2  # day2 once
    ingest = json.loads((runs[-1] / "ingest.done").read_text())
    assert ingest["checks"]["new_rows_read"] == day2
    assert not [p.name for p in wd.iterdir() if p.name.startswith(".")]  # nothing staged or half-written left
    assert not [p.name for p in (pub / "bundles").iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_the_readme_nightly_config_runs_as_written_and_status_reports_it(workdir: Path) -> None:
    """The README's cron line with the shipped config: `recsys pipeline run --config .../nightly.toml` from the
    deployment root, with the day's log file in logs/incoming/; then `recsys pipeline status`."""
    incoming = workdir / "logs" / "incoming"
    incoming.mkdir(parents=True)
    rng = np.random.default_rng(1)
    n = 4000
    pl.DataFrame({"user": [f"u{u}" for u in rng.integers(0, 200, n)], "item": [f"i{x}" for x in rng.zipf(1.3, n) % 300],
                  "timestamp": 1_700_000_000 + np.arange(n)}).write_csv(incoming / "events-2026-12-01.csv")
    nightly = Path(__file__).resolve().parents[2] / "experiments" / "pipelines" / "nightly.toml"
    out = _cli(["pipeline", "run", "--config", str(nightly), "--no-samples"])
    assert out.returncode == 0, out.stderr[-3000:]
    bundles = workdir / "bundles" / "nightly"
    assert os.readlink(bundles / "current").startswith("bundles/")
    status = _cli(["pipeline", "status", "--config", str(nightly)])
    assert status.returncode == 0, status.stdout + status.stderr
    assert "champion run" in status.stdout and "published" in status.stdout and "state    consistent" in status.stdout
    as_json = json.loads(_cli(["pipeline", "status", "--config", str(nightly), "--json"]).stdout)
    assert as_json["lock"] is None and as_json["problems"] == [] and as_json["runs"][0]["outcome"] == "published"
    assert as_json["champion"]["gate_metric"] == "ndcg_10"


def test_status_names_a_failed_step_a_rejection_and_a_half_finished_publish(workdir: Path) -> None:
    from pipelines.status import format_status, pipeline_status
    from recsys.export.publish import point

    cfg = load_pipeline_config(write_config(workdir, ALS))
    first = run_pipeline(cfg, echo=quiet)
    worse = load_pipeline_config(write_config(workdir, POP, pipeline="tolerance = 0.0", name="worse.toml"))
    with pytest.raises(PipelineExit):
        run_pipeline(worse, echo=quiet)
    s = pipeline_status(cfg)
    assert [r["outcome"] for r in s["runs"]] == ["rejected", "published"]
    assert "worse than the champion" in s["runs"][0]["reason"] and s["problems"] == []
    assert s["champion"]["run_id"] == first.run.run_id and s["champion"]["model"] == "als:als"
    # a run that passed its gate and was stopped after `current` switched, before the champion record
    run = workdir / "wd" / "runs" / "20991231T000000000000Z"
    run.mkdir()
    (run / "gate.done").write_text("{}")
    (workdir / "pub" / "bundles" / run.name).mkdir()
    (workdir / "pub" / "bundles" / run.name / "manifest.json").write_text("{}")
    point(workdir / "pub", run.name)
    s = pipeline_status(cfg, check_registry=False)
    assert s["runs"][0]["outcome"] == "stopped" and s["runs"][0]["step"] == "ingest"
    assert any("publish step did not finish" in p for p in s["problems"])
    assert any("champion.json names" in p for p in s["problems"])
    assert "problems:" in format_status(s)
    from pipelines.publishing import rollback_champion

    with pytest.raises(RuntimeError, match="passed its gate but was stopped before its publish step finished"):
        rollback_champion(cfg)  # rolling back now would leave the half-finished publish to overwrite it
    (run / "state.json").write_text(json.dumps({"step": "publish", "error": "OSError: disk full"}))
    assert pipeline_status(cfg, check_registry=False)["runs"][0] == {
        "run_id": run.name, "attempts": 0, "outcome": "failed", "step": "publish", "reason": "OSError: disk full"}


@pytest.mark.parametrize("engine", ["memory", "outofcore"])
def test_a_log_folder_run_rebuilds_its_input_after_its_commit(tmp_path: Path, engine: str) -> None:
    """Killed after the commit, before its marker: the rerun of the run reads the same rows again, once."""
    from pipelines.config import DataConfig
    from pipelines.ingest_logs import collect, commit
    from recsys.prepare import prepare

    logs, wd = tmp_path / "logs", tmp_path / "wd"
    logs.mkdir()
    for d in (1, 2):
        (logs / f"day{d}.csv").write_text("user,item,timestamp\n" + "".join(
            f"u{(i * d) % 11},i{i % 7},{1_600_000_000 + 1000 * d + i}\n" for i in range(60)))
        cfg = DataConfig(path=str(logs), engine=engine)
        prepare(cfg, tmp_path / f"once{d}", ingested=collect(cfg, wd, f"r{d}"))
        commit(wd)
    prepare(cfg, tmp_path / "again", ingested=collect(cfg, wd, "r2"))  # r2 again, its state committed
    commit(wd)
    once, again = (json.loads((tmp_path / n / "report.json").read_text()) for n in ("once2", "again"))
    assert again["n_events"] == once["n_events"] == 120 and again["fingerprint"] == once["fingerprint"]
    assert again["stats"]["new_rows_read"] == 60
    state = json.loads((wd / "logs" / "files.json").read_text())
    assert len(state["parts"]) == 2 and sorted(p.name for p in (wd / "logs" / "parts").iterdir()) == sorted(
        Path(p).name for p in state["parts"])  # no part of the first r2 left behind


def test_a_log_folder_state_from_before_parts_is_read_on(tmp_path: Path) -> None:
    """``logs/accumulated.parquet`` (every row read so far in one file) is the first part of the next run."""
    from pipelines.config import DataConfig
    from pipelines.ingest_logs import collect, commit

    logs, state = tmp_path / "logs", tmp_path / "wd" / "logs"
    logs.mkdir()
    state.mkdir(parents=True)
    (logs / "day1.csv").write_text("user,item,timestamp\nu1,i1,1600000000\nu2,i2,1600000001\n")
    listing = {"day1.csv": {"size": (logs / "day1.csv").stat().st_size, "mtime": (logs / "day1.csv").stat().st_mtime}}
    pl.DataFrame({"user": ["u1", "u2"], "item": ["i1", "i2"], "timestamp": [1600000000, 1600000001],
                  "weight": [1.0, 1.0]}).write_parquet(state / "accumulated.parquet")
    (state / "files.json").write_text(json.dumps({"files": listing, "run_id": "old", "previous_files": {},
                                                  "previous_rows": 0}))
    (logs / "day2.csv").write_text("user,item,timestamp\nu3,i1,1700000000\n")
    got = collect(DataConfig(path=str(logs)), tmp_path / "wd", run_id="new")
    assert got.frame["user"].to_list() == ["u1", "u2", "u3"] and got.report.stats["new_rows_read"] == 1
    commit(tmp_path / "wd")
    assert json.loads((state / "files.json").read_text())["parts"] == ["parts/accumulated.parquet",
                                                                       "parts/new-00000.parquet"]


def test_a_log_folder_takes_compressed_files(tmp_path: Path) -> None:
    import gzip

    from pipelines.config import DataConfig
    from pipelines.ingest_logs import collect

    logs = tmp_path / "logs"
    logs.mkdir()
    rows = "\n".join(["user,item,timestamp"] + [f"u{i % 9},i{i % 13},{1_600_000_000 + i}" for i in range(90)])
    (logs / "day1.csv.gz").write_bytes(gzip.compress((rows + "\n").encode()))
    (logs / "day2.csv").write_text("user,item,timestamp\nu1,i1,1700000000\n")
    (logs / "notes.md.gz").write_bytes(gzip.compress(b"not a log"))  # not a log suffix: ignored
    got = collect(DataConfig(path=str(logs)), tmp_path / "wd", run_id="r1")
    assert got.report.stats["new_files"] == 2 and got.report.rows_read == 91 and got.frame.height == 91


def test_a_catalogue_adds_new_items_to_the_published_bundle_without_retraining(workdir: Path) -> None:
    """`[pipeline] catalogue`: the export step gives the catalogue's unknown items vectors from their content."""
    pl.DataFrame({"item": [1, 100001, 100002, 100003],  # item 1 is known: kept as trained
                  "title": ["renamed", "Sunny Forest Lamp Deluxe", None, None],
                  "categories": ["Lighting", "Lighting", "Books", None]}).write_csv(workdir / "catalogue.csv")
    tt = TT.replace("epochs = 15", "epochs = 3") + 'features = ["categories", "ngrams"]\nid_dropout = 0.3\n'
    ctx = run_pipeline(load_pipeline_config(write_config(workdir, tt, pipeline='catalogue = "catalogue.csv"')),
                       echo=quiet)
    assert ctx.run.is_done("publish")
    rec = Recommender.load(workdir / "pub", search="exact")
    assert rec.manifest["content_only"]["items"] == [[100001, "text"], [100002, "categories"], [100003, "none"]]
    lamp = rec.similar_items(100001, k=5)
    assert lamp.source == "model" and "added after training" in lamp.note and len(lamp.items) == 5
    assert rec.similar_items(100003, k=5).source == "popularity"
    n_known = rec.manifest["counts"]["items"] - 3
    assert n_known == ctx.data().split.n_items  # the data's items, then the catalogue's new ones


def test_tune_table_retunes_on_schedule_and_reuses_the_best_in_between(workdir: Path) -> None:
    from pipelines.pipeline_config import TuneSection
    from pipelines.scheduled_tune import due

    tune = '[tune]\nmodels = ["als"]\ntrials = 2\nevery_runs = 2\n'
    cfg = load_pipeline_config(write_config(workdir, POP + ALS + tune))
    decisions = []
    for _ in range(3):
        lines: list[str] = []
        ctx = run_pipeline(cfg, echo=lines.append)
        state = json.loads((workdir / "wd" / "tune" / "als.json").read_text())
        decisions.append((state["tuned_in_run"] == ctx.run.run_id, state["runs_since"]))
        assert set(state["best_params"]) == {"factors", "regularization", "alpha", "iterations"}
        trained = MlflowClient(tracking.tracking_uri()).get_run(ctx.run.info("train-als")["run_id"])
        assert trained.data.params["model.factors"] == str(state["best_params"]["factors"])
    assert decisions == [(True, 0), (False, 1), (True, 0)]  # a study, its best reused once, a new study
    import optuna

    studies = sorted(s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{workdir / 'optuna.db'}"))
    assert len(studies) == 2 and all(s.startswith("default-als-") for s in studies)
    grown = TuneSection(models=["als"], growth=0.05)
    last = {"study": "s", "n_events": 1000, "runs_since": 0}
    assert due(last, grown, 1040) is None and "grew by 6.0%" in due(last, grown, 1060)
    with pytest.raises(ConfigError, match=r"\[tune\] models = \['bpr'\] are not model labels"):
        load_pipeline_config(write_config(workdir, ALS + '[tune]\nmodels = ["bpr"]\n', name="bad.toml"))
    with pytest.raises(ConfigError, match=r"\[tune\]: sampler must be tpe or gp; got 'random'"):
        load_pipeline_config(write_config(workdir, ALS + '[tune]\nmodels = ["als"]\nsampler = "random"\n',
                                          name="bad2.toml"))
    with pytest.raises(ConfigError, match=r"\[tune\]: refine is a share of the trials in \[0, 1\); got 1.5"):
        load_pipeline_config(write_config(workdir, ALS + '[tune]\nmodels = ["als"]\nrefine = 1.5\n',
                                          name="bad3.toml"))
