"""recsys tune: Optuna search over a model's declared space, trials as nested MLflow runs, resumable after a kill."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipelines import tracking
from pipelines.config import parse_run_config
from pipelines.pipeline_config import parse_pipeline_config
from pipelines.tune import best_config_toml, tune

DATA = {"name": "tiny", "synthetic_users": 150, "synthetic_items": 60, "synthetic_events": 3000}
CONFIG = """
[run]
experiment = "t"
name = "i2v"
seed = 3
[data]
name = "tiny"
synthetic_users = 150
synthetic_items = 60
synthetic_events = 3000
[model]
name = "item2vec"
batch_size = 1024
"""


def _cfg(model: dict) -> object:
    return parse_run_config({"run": {"experiment": "t", "name": model["name"], "seed": 3}, "data": DATA,
                             "model": model}, source="test")


def _trials(storage: str, study: str) -> list:
    import optuna

    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def test_tune_searches_the_declared_space_and_writes_the_best_config(sqlite_store: Path) -> None:
    lines: list[str] = []
    res = tune(_cfg({"name": "als", "validate_every": 1}), sqlite_store / "runs", trials=4, echo=lines.append)
    assert res.complete + res.pruned == 4 and res.failed == 0 and res.storage.endswith("optuna.db")
    assert (sqlite_store / "optuna.db").is_file()  # beside mlruns.db
    trials = _trials(res.storage, res.study)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    best = max((t for t in trials if t.value is not None), key=lambda t: t.value)
    assert res.best_value == best.value and set(best.params) == {"factors", "regularization", "alpha", "iterations"}
    # the TOML is a pipeline config's model table, ready to use
    table = tomllib.loads(res.toml_path.read_text())
    cfg = parse_pipeline_config(table, source="best")
    assert cfg.models[0].name == "als" and cfg.models[0].params["factors"] == best.params["factors"]
    client = MlflowClient(tracking.tracking_uri())
    children = client.search_runs([client.get_run(res.parent_run_id).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{res.parent_run_id}'")
    assert sorted(c.data.tags["optuna_trial"] for c in children) == ["0", "1", "2", "3"]
    assert all(c.info.status == "FINISHED" for c in children)
    assert client.get_run(res.parent_run_id).data.tags["best_trial"] == str(res.best_trial)
    assert any(line.startswith("  trial 0: val_ndcg_10 ") for line in lines)
    again = tune(_cfg({"name": "als", "validate_every": 1}), sqlite_store / "runs", trials=4, echo=lines.append)
    assert len(_trials(res.storage, res.study)) == 4 and again.parent_run_id == res.parent_run_id  # already done
    # the study as `recsys experiments compare --study` shows it: the trials best first, CSV and PNGs
    from typer.testing import CliRunner

    from pipelines.cli import app

    shown = CliRunner().invoke(app, ["experiments", "compare", "--study", res.study, "--out", "reports"])
    assert shown.exit_code == 0, shown.output
    table = shown.output.splitlines()
    assert table[0] == f"study {res.study}: 4 trials, direction maximize"
    first = table[2].split()
    assert first[0] == str(res.best_trial) and first[2] == f"{res.best_value:.5f}"
    for suffix in (".csv", "_history.png", "_importance.png"):
        assert (sqlite_store / "reports" / f"study_{res.study}{suffix}").is_file()
    missing = CliRunner().invoke(app, ["experiments", "compare", "--study", "nope"])
    assert missing.exit_code != 0 and f"studies there: ['{res.study}']" in missing.output


def test_a_model_without_a_search_space_and_bad_budgets_are_refused(sqlite_store: Path) -> None:
    with pytest.raises(ValueError, match="declares no search space"):
        tune(_cfg({"name": "popularity"}), sqlite_store / "runs", trials=2)
    with pytest.raises(ValueError, match="trials and jobs must be >= 1"):
        tune(_cfg({"name": "als"}), sqlite_store / "runs", trials=0)


def test_best_config_toml_round_trips_every_value_type() -> None:
    text = best_config_toml("two_tower", {"dim": 64, "lr": 0.0003, "windows": "prefix", "features": ["ngrams"],
                                          "restore_best": True}, "s", 7, "val_ndcg_10", 0.05)
    assert tomllib.loads(text)["models"]["two_tower"] == {"name": "two_tower", "dim": 64, "lr": 0.0003,
                                                          "windows": "prefix", "features": ["ngrams"],
                                                          "restore_best": True}


def test_a_killed_tune_continues_without_losing_or_double_counting_a_trial(tmp_path: Path) -> None:
    """`recsys tune` is SIGKILLed inside trial 1; the rerun marks it failed and finishes the budget."""
    (tmp_path / "run.toml").write_text(textwrap.dedent(CONFIG))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    cmd = [sys.executable, "-m", "pipelines.cli", "tune", "-c", "run.toml", "--trials", "3", "--study", "s"]
    killed = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**env, "RECSYS_FAULT_POINT": "tune-trial-1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert [(t.number, t.state.name) for t in _trials(storage, "s")] == [(0, "COMPLETE"), (1, "RUNNING")]
    rerun = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "trial 1 was left running by a stopped process: marked failed" in rerun.stdout
    states = [(t.number, t.state.name) for t in _trials(storage, "s")]
    assert states[:2] == [(0, "COMPLETE"), (1, "FAIL")] and len(states) == 4  # trials 2 and 3 make up the budget
    assert sum(s in ("COMPLETE", "PRUNED") for _, s in states) == 3
    assert "[models.item2vec]" in rerun.stdout
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns.db'}")
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("t").experiment_id],
                              filter_string="tags.optuna_trial = '1'")
    assert len(runs) == 1 and runs[0].info.status == "KILLED" and runs[0].data.tags["optuna_state"] == "FAIL"


def test_item2vec_trials_start_at_the_config_and_are_scored_at_every_encode_time_setting(sqlite_store: Path) -> None:
    """Trial 0 is the given config's point; a trial's value is its fit's best over scoring x user_decay (refit
    here with the same seed and scored combination by combination), and the best TOML carries that setting."""
    import tomllib as toml

    from pipelines.train import model_inputs, prepared_data, protocol_for
    from pipelines.tune import encode_combos, start_point
    from recsys.evaluation.evaluator import evaluate_model
    from recsys.models.item2vec import ITEM2VEC_SPACE, Item2Vec
    from recsys.models.registry import build_model

    given = {"name": "item2vec", "batch_size": 1024, "window": 3, "negatives": 5, "ns_exponent": 0.75, "epochs": 5,
             "dim": 64, "subsample": 0.0, "lr": 0.05, "user_decay": 0.6, "scoring": "in-in"}
    cfg = _cfg(given)
    res = tune(cfg, sqlite_store / "runs", trials=2, echo=lambda _: None)
    first = _trials(res.storage, res.study)[0]
    fitted = {k: v for k, v in given.items() if k in ITEM2VEC_SPACE and k not in Item2Vec.encode_time}
    assert first.params == fitted == start_point(cfg, {k: ITEM2VEC_SPACE[k] for k in fitted})
    assert first.state.name == "COMPLETE"  # the pruner waits for 5 complete trials
    # epochs as % of the schedule; not validated before the pruner's 30% warm-up, nor at the last epoch (the
    # encode-time sweep gives the trial's value there)
    assert sorted(first.intermediate_values) == [40, 60, 80]
    data = prepared_data(cfg, sqlite_store / "refit")
    params = {k: v for k, v in given.items() if k != "name"}
    model = build_model("item2vec", {"seed": 3, **params}, "cpu", **model_inputs("item2vec", params, data))
    model.fit(data.split.train)
    combos = encode_combos({k: ITEM2VEC_SPACE[k] for k in Item2Vec.encode_time})
    assert len(combos) == 2 * 6  # scoring x user_decay (five fixed decays and "auto")
    scores = []
    for combo in combos:
        model.config = dataclasses.replace(model.config, **combo)
        scores.append(evaluate_model(model, data.split.valid_history, data.split.valid_targets,
                                     protocol_for(cfg, data))["ndcg_10"])
    assert first.value == pytest.approx(max(scores), abs=1e-12)
    assert first.user_attrs["encode_time"] == combos[scores.index(max(scores))]
    best = _trials(res.storage, res.study)[res.best_trial]
    table = toml.loads(res.toml_path.read_text())["models"]["item2vec"]
    assert {k: table[k] for k in Item2Vec.encode_time} == best.user_attrs["encode_time"]


def test_a_start_point_leaves_out_values_outside_the_space() -> None:
    from pipelines.tune import start_point
    from recsys.search_space import Choice, Float

    cfg = _cfg({"name": "item2vec", "window": 7, "lr": 0.05})
    space = {"window": Choice(3, 5), "lr": Float(0.01, 0.1), "dim": Choice(64, 128)}
    assert start_point(cfg, space) == {"lr": 0.05, "dim": 128}  # window 7 is not a choice; dim: the default


def test_repeated_settings_take_the_earlier_result_without_a_fit_and_do_not_count(sqlite_store: Path,
                                                                                  monkeypatch) -> None:
    """A two-point space and a budget of 3: two fits, the sampler's repeats answered from their twins (no
    MLflow run, not counted), and the call stops once the repeats say the space is exhausted."""
    from recsys.models.item2vec import Item2Vec
    from recsys.search_space import Choice

    monkeypatch.setattr(Item2Vec, "search_space", {"window": Choice(3, 5), "scoring": Choice("in-in"),
                                                   "user_decay": Choice(1.0)})
    lines: list[str] = []
    cfg = _cfg({"name": "item2vec", "batch_size": 1024, "epochs": 2, "dim": 16})
    res = tune(cfg, sqlite_store / "runs", trials=3, echo=lines.append)
    trials = _trials(res.storage, res.study)
    fits = [t for t in trials if "repeat_of" not in t.user_attrs]
    repeats = [t for t in trials if "repeat_of" in t.user_attrs]
    assert sorted(t.params["window"] for t in fits) == [3, 5] and res.complete + res.pruned == 2
    assert res.repeats == len(repeats)
    assert len(repeats) == 9  # MAX_REPEATS x the budget, then the call gives up
    for t in repeats:
        twin = trials[t.user_attrs["repeat_of"]]
        assert t.params == twin.params and t.state == twin.state and "mlflow_run_id" not in t.user_attrs
        assert twin.state.name != "COMPLETE" or t.value == twin.value  # a repeat of a pruned trial is pruned
    assert any("the space may be exhausted" in line for line in lines)
    client = MlflowClient(tracking.tracking_uri())
    children = client.search_runs([client.get_run(res.parent_run_id).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{res.parent_run_id}'")
    assert len(children) == 2  # one MLflow run per fit


def test_the_pruner_cuts_the_bottom_quarter_by_more_than_one_standard_error() -> None:
    """Eight complete trials best 0.1 .. 0.8 by step 50 (25th percentile, numpy's linear rule: 0.275); a
    trial's standard error widens the cut below it: 0.27 with SE 0.01 goes on (within one SE), 0.25 with SE
    0.01 and 0.27 with no SE are pruned; nothing is pruned before the warm-up."""
    import optuna

    from pipelines.tune import WARMUP_PERCENT, make_pruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=make_pruner())
    for v in range(1, 9):
        t = study.ask()
        # steps differ between trials: each counts with its best at or before the step compared
        t.report(v / 10, 40 if v % 2 else 50)
        t.report(v / 10 + 0.5, 90)  # after step 50: not counted there
        study.tell(t, v / 10 + 0.5)
    keep, cut, bare, early = study.ask(), study.ask(), study.ask(), study.ask()
    for trial, value, se in ((keep, 0.27, 0.01), (cut, 0.25, 0.01)):
        trial.set_user_attr("se_50", se)
        trial.report(value, 50)
    bare.report(0.27, 50)
    early.report(0.0, WARMUP_PERCENT - 1)
    assert not keep.should_prune() and cut.should_prune() and bare.should_prune() and not early.should_prune()


def test_the_pruner_waits_for_five_complete_trials() -> None:
    import optuna

    from pipelines.tune import make_pruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=make_pruner())
    for v in range(4):
        t = study.ask()
        t.report(0.5 + v, 50)
        study.tell(t, 0.5 + v)
    low = study.ask()
    low.report(0.0, 50)
    assert not low.should_prune()


def test_validation_epochs_are_the_first_reaching_each_pruning_point() -> None:
    from pipelines.tune import validation_epochs

    assert validation_epochs(20, skip_last=True) == {6, 10, 15}  # 30%, 50%, 75% of 20
    assert validation_epochs(5, skip_last=True) == {2, 3, 4}
    assert validation_epochs(2, skip_last=True) == {1}  # 30% and 50% -> epoch 1; 75% -> the last, swept anyway
    assert validation_epochs(2, skip_last=False) == {1, 2}


def test_the_gp_sampler_searches_past_its_random_start_and_a_bad_sampler_is_named(sqlite_store: Path) -> None:
    from pipelines.tune import make_sampler

    sampler = make_sampler("gp", 0)
    assert type(sampler).__name__ == "GPSampler"
    with pytest.raises(ValueError, match="sampler 'cma'"):
        tune(_cfg({"name": "als", "validate_every": 1}), sqlite_store / "runs", trials=1, sampler="cma")
    import optuna

    # 12 trials of a 2-D quadratic: after the 10 random ones the GP proposes near the optimum at (0.3, 0.3)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=make_sampler("gp", 0))
    study.optimize(lambda t: -((t.suggest_float("x", 0, 1) - 0.3) ** 2 + (t.suggest_float("y", 0, 1) - 0.3) ** 2),
                   n_trials=14)
    random_best = max(t.value for t in study.trials[:10])
    assert max(t.value for t in study.trials[10:]) >= random_best


def test_refinement_is_a_greedy_coordinate_search_from_the_best_trial_the_most_important_parameter_first() -> None:
    """Twelve trials where only x matters: the moves vary x first (fANOVA ranks it first) over its ladder, from the
    best trial, leaving out a move a trial already took; once a trial moved y, the order continues at y."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    from pipelines.tune import refine_moves
    from recsys.search_space import Float

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {"y": Float(0.0, 1.2), "x": Float(0.0, 1.2)}  # ladders: 0, 0.4, 0.8, 1.2
    dists = {k: FloatDistribution(0.0, 1.2) for k in space}
    study = optuna.create_study(direction="maximize")
    for i in range(12):
        x, y = (i * 7 % 12) / 10, (i * 5 % 12) / 10
        study.add_trial(create_trial(params={"x": x, "y": y}, distributions=dists, value=x))
    best = study.best_trial.params
    assert best == {"x": 1.1, "y": 0.1}
    first = refine_moves(study, space)
    assert study.user_attrs["refine_order"] == ["x", "y"]  # kept for a continued study
    assert [(m["x"], m["y"]) for m in first] == [(0.8, 0.1), (0.4, 0.1), (0.0, 0.1),  # 1.2: within a third of a rung
                                                 (1.1, 0.4), (1.1, 0.8), (1.1, 1.2)]  # 0.0: too close to 0.1
    study.add_trial(create_trial(params={"x": 0.8, "y": 0.1}, distributions=dists, value=0.8))
    assert [m["x"] for m in refine_moves(study, space)][:2] == [0.4, 0.0]  # x 0.8 was tried
    study.add_trial(create_trial(params={"x": 1.1, "y": 0.4}, distributions=dists, value=0.2,
                                 user_attrs={"refine_param": "y"}))
    assert [(m["x"], m["y"]) for m in refine_moves(study, space)] == [(1.1, 0.8), (1.1, 1.2), (0.4, 0.1),
                                                                      (0.0, 0.1)]


def test_the_last_share_of_the_budget_refines_the_best_trial(sqlite_store: Path) -> None:
    """ALS, 6 trials, refine 0.5: trials 3-5 each move one parameter of the best trial before them, the moved
    parameter recorded."""
    lines: list[str] = []
    res = tune(_cfg({"name": "als", "validate_every": 1}), sqlite_store / "runs", trials=6, refine=0.5,
               echo=lines.append)
    trials = _trials(res.storage, res.study)
    assert len(trials) == 6 and res.complete + res.pruned == 6
    for t in trials[3:]:
        earlier = [e for e in trials[: t.number] if e.state.name == "COMPLETE"]
        best = max(earlier, key=lambda e: e.value)
        assert sum(t.params[k] != best.params[k] for k in t.params) == 1, (t.number, t.params, best.params)
        assert t.user_attrs["refines"] == best.number
        assert t.params[t.user_attrs["refine_param"]] != best.params[t.user_attrs["refine_param"]]
    assert sum(line.startswith("  refining: trial ") for line in lines) == 3
    with pytest.raises(ValueError, match="refine is a share"):
        tune(_cfg({"name": "als"}), sqlite_store / "runs", trials=2, refine=1.0)
