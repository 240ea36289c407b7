"""`recsys tune`: hyperparameter search in the product, on Optuna.

TPE sampling (multivariate) over the model's declared search space (``Model.search_space``, beside its config),
then, for the last ``refine`` share of the trials (:data:`REFINE_SHARE`), coordinate moves from the best trial
(:func:`refine_moves`: a greedy coordinate search, each parameter in turn over its values, the most important
first), pruning on the validation metric (:class:`MarginPruner`: a trial below the bottom quarter of the complete
ones, compared at the same share of each trial's epochs, by more than its own validation standard error; none before
30% of them), each trial a nested MLflow run under the study's run, the study in Optuna's RDB storage (by default
``optuna.db`` beside the embedded MLflow store; a database URL for a shared one). A rerun with the same study
continues it: trials a killed process left RUNNING are marked FAIL first (only trials of this machine whose process
is gone: a live run's trials, or another machine's on a shared database, are never touched), and the trial budget
counts finished trials (complete or pruned), so no trial is lost or counted twice; a trial whose sampled settings
repeat an earlier trial's takes that result without a fit and is not counted (TPE on a small categorical space
proposes the same point again). A new study's first trial is the given config's own values (those inside the space),
so the search never ends below where it started.

Encode-time parameters (``Model.encode_time``: item2vec's ``scoring`` and ``user_decay``) are not sampled: every
fit is scored at each combination of their values without a refit, and the trial's value is the best of them (kept
as the trial's ``encode_time`` attribute and in its MLflow params). At every epoch's validation the first of them
is swept (the others at the config's values) and the best drives pruning. A model whose fit does not act on
validation (no checkpoints) is validated only at the epochs the pruner reads (:func:`validation_epochs`: 30%, 50%
and 75% of its schedule; not the last when the encode-time sweep follows). Budgets: ``--trials`` and ``--minutes``;
``--jobs`` runs trials in threads at once where the machine has room. The output is the best configuration as a
TOML table ready for a pipeline config.

    recsys tune --config experiments/configs/beauty_item2vec.toml --trials 36
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import tracking
from pipelines.config import RunConfig
from pipelines.progress import progress, total_epochs
from pipelines.runstate import fault_point
from pipelines.study_report import trial_params
from pipelines.train import eval_parts, model_inputs, prepared_data, protocol_for
from recsys import atomic
from recsys.device import resolve_device
from recsys.evaluation.evaluator import evaluate_model, make_validator
from recsys.models.base import StopTraining
from recsys.models.registry import MODELS, build_model, check_model_config
from recsys.prepare.format import Prepared
from recsys.search_space import Choice, Float, Int, Param, check_space, moves

if TYPE_CHECKING:
    import optuna

STORAGE_FILE = "optuna.db"
WARMUP_PERCENT = 30  # no pruning before this share of a trial's epochs: early epochs rank settings poorly
# Where a trial is validated for pruning (percent of its epochs; a model without checkpoints is validated
# only at the first epoch reaching each): a validation costs about what a few epochs of item2vec do, so
# validating every epoch made a 20-epoch Beauty trial ~8x slower than its fit.
PRUNE_AT = (30, 50, 75)
# The cut: the bottom quarter of the complete trials at the same share of their epochs. The budget counts
# trials, not time, so a pruned trial is information lost: Optuna's median rule pruned 24 of 36 trials of
# the Beauty study, its bottom-quarter rule 24 too, most within one validation standard error of the cut
# (experiments/reports/tune_item2vec.md as of 5fa2f72 and 5d1d804). A trial is pruned only when below the
# cut by more than MARGIN_SE of its own validation standard errors (``val_<metric>_se``).
CUT_PERCENTILE = 25.0
MARGIN_SE = 1.0
STARTUP_TRIALS = 5  # complete trials needed before any pruning


class MarginPruner:
    """Optuna pruner (duck-typed ``prune(study, trial)``): prunes a trial whose best validation so far is
    below the :data:`CUT_PERCENTILE` percentile of the complete trials' best values up to the same step by
    more than ``margin_se`` of its own standard error at that step (the trial's ``se_<step>`` attribute; 0
    when absent), once ``startup`` trials completed and from ``warmup`` (the step is percent of a trial's
    epochs). Steps need not match between trials: each complete trial counts with its best at or before
    the step, and is left out when it reported nothing by then."""

    def __init__(self, percentile: float = CUT_PERCENTILE, margin_se: float = MARGIN_SE,
                 startup: int = STARTUP_TRIALS, warmup: int = WARMUP_PERCENT) -> None:
        if not 0 <= percentile <= 100 or margin_se < 0 or startup < 1 or warmup < 0:
            raise ValueError(f"percentile in [0, 100], margin_se >= 0, startup >= 1, warmup >= 0; got "
                             f"{percentile}, {margin_se}, {startup}, {warmup}")
        self.percentile, self.margin_se, self.startup, self.warmup = percentile, margin_se, startup, warmup

    def cut(self, study: Any, step: int) -> float | None:
        """The percentile of the complete trials' best values at or before ``step`` (None: too few)."""
        import numpy as np
        from optuna.trial import TrialState

        bests = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            upto = [v for s, v in t.intermediate_values.items() if s <= step and math.isfinite(v)]
            if upto:
                bests.append(max(upto))
        return float(np.percentile(bests, self.percentile)) if len(bests) >= self.startup else None

    def prune(self, study: Any, trial: Any) -> bool:
        step = trial.last_step
        if step is None or step < self.warmup:
            return False
        values = [v for v in trial.intermediate_values.values() if math.isfinite(v)]
        if not values:
            return True  # only non-finite figures: nothing to rank, nothing to learn from going on
        cut = self.cut(study, step)
        se = float(trial.user_attrs.get(f"se_{step}", 0.0))
        return cut is not None and max(values) < cut - self.margin_se * se


def make_pruner() -> optuna.pruners.BasePruner:
    """The study's pruner: :class:`MarginPruner` registered as an Optuna pruner."""
    import optuna

    class _Pruner(MarginPruner, optuna.pruners.BasePruner):
        pass

    return _Pruner()


def validation_epochs(epochs: int, skip_last: bool) -> set[int]:
    """The epochs (1-based) a model without checkpoints is validated at for pruning: the first reaching each
    share in :data:`PRUNE_AT`, not the last when the encode-time sweep follows it."""
    at = {max(1, math.ceil(p * epochs / 100)) for p in PRUNE_AT}
    return at - {epochs} if skip_last else at


SAMPLERS = ("tpe", "gp")


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """``tpe``: multivariate TPE (10 random trials, then a density model of the good and the bad ones); ``gp``:
    Optuna's Gaussian-process Bayesian optimisation (10 random trials, then the expected improvement of a GP fitted
    to every finished trial; ranges and choices alike)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # multivariate: stable in use
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)


# The last share of the trial budget: a greedy coordinate search from the best trial (each parameter in turn over
# its values, the most important first), where the sampler alone stays in the interior of a space whose best
# lies at its bounds (experiments/reports/tune_item2vec.md as of deb8722: TPE and GP 0.944x and 0.976x of a
# greedy coordinate search over the same space, 36 fits each). One pass over item2vec's space is ~20 moves.
REFINE_SHARE = 2 / 3
MAX_REPEATS = 3  # repeated settings allowed per budgeted trial before a call gives up (an exhausted space)


@dataclass
class TuneResult:
    """What a ``recsys tune`` call leaves: the study, its best trial and where the TOML went."""

    study: str
    storage: str
    metric: str
    best_value: float
    best_trial: int
    best_params: dict[str, Any]
    complete: int
    pruned: int
    failed: int
    marked_failed: list[int]  # trials a killed earlier process left RUNNING, marked FAIL by this call
    parent_run_id: str
    toml_path: Path
    repeats: int = 0  # trials that proposed settings already tried: their twin's result, no fit, not counted

    def summary(self) -> str:
        return (f"study {self.study}: best val_{self.metric} {self.best_value:.5f} (trial {self.best_trial}); "
                f"{self.complete} complete, {self.pruned} pruned, {self.failed} failed, {self.repeats} repeats; "
                f"best config: {self.toml_path}")


def default_storage() -> str:
    """``sqlite:///optuna.db`` beside the embedded MLflow store (the working directory, or the folder of a
    ``sqlite:`` ``MLFLOW_TRACKING_URI``)."""
    uri = tracking.tracking_uri()
    folder = Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else Path(".")
    return f"sqlite:///{folder / STORAGE_FILE}"


def tune(cfg: RunConfig, out: str | Path, trials: int = 20, minutes: float = 0.0, storage: str | None = None,
         study_name: str | None = None, jobs: int = 1, metric: str = "ndcg_10",
         echo: Callable[[str], None] = print, data: Prepared | None = None, sampler: str = "tpe",
         refine: float | None = None) -> TuneResult:
    """Search ``cfg``'s model's space on validation ``metric``; returns the study's best (see the module doc).

    Parameters
    ----------
    cfg : a run config: its data, the model's fixed parameters (the search overrides the searched ones).
    out : folder for the prepared data and the best config TOML.
    trials : finished trials (complete or pruned) the study should hold at the end.
    minutes : wall-clock budget of this call (0 = none); the trial running at the limit finishes.
    storage : Optuna RDB URL (default :func:`default_storage`).
    study_name : default ``<experiment>-<run name>``.
    jobs : trials run at once (threads).
    metric : validation metric to maximise (``val_<metric>`` per epoch drives pruning).
    data : the prepared data when the caller has it (the pipeline); default: prepared from ``cfg.data``.
    sampler : ``tpe`` (multivariate TPE) or ``gp`` (Optuna's Gaussian-process sampler: fewer trials wasted on
        a small budget, a few seconds per proposal); see :func:`make_sampler`.
    refine : the share of ``trials`` spent last on coordinate moves from the best trial
        (:func:`refine_moves`), in [0, 1); None = :data:`REFINE_SHARE`. The sampler proposes the rest, and any
        refinement trial left when every move was tried.
    """
    import optuna

    space, encode = _space(cfg)
    device = resolve_device(cfg.run.device)
    check_model_config(cfg.model_name, cfg.model, device, where=f"{cfg.source} [model]")
    if trials < 1 or jobs < 1 or minutes < 0:
        raise ValueError(f"trials and jobs must be >= 1 and minutes >= 0; got {trials}, {jobs}, {minutes}")
    refine = REFINE_SHARE if refine is None else refine
    if not 0 <= refine < 1:
        raise ValueError(f"refine is a share of the trials in [0, 1); got {refine}")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
    out = Path(out)
    data = data if data is not None else prepared_data(cfg, out)
    name = study_name or f"{cfg.run.experiment}-{cfg.run.name}"
    url = storage or default_storage()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=url, direction="maximize", load_if_exists=True,
                                pruner=make_pruner())
    # seeded by the trials already there: a continued study draws new points, not the first call's again
    study.sampler = make_sampler(sampler, cfg.run.seed + len(study.trials))
    if not study.trials:
        start = start_point(cfg, space)
        if start:
            study.enqueue_trial(start)
    marked = _fail_stale(study, url)
    for number in marked:
        echo(f"  trial {number} was left running by a stopped process: marked failed")
    parent = _parent_run(study, cfg, url)
    remaining = trials - _finished(study)
    echo(f"study {name} in {url}: {_finished(study)} finished trials, {max(remaining, 0)} to run"
         + (f", at most {minutes:g} min" if minutes else ""))
    if remaining > 0:
        objective = _objective(cfg, data, space, encode, metric, device, parent, echo)
        deadline = time.monotonic() + minutes * 60 if minutes else None
        repeats = 0
        refine_from = trials - math.floor(refine * trials)  # finished trials before the coordinate moves
        while (left := trials - _finished(study)) > 0 and repeats < MAX_REPEATS * trials:
            before = len(study.trials)
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                break
            if _finished(study) < refine_from:
                batch = min(left, refine_from - _finished(study))
            else:
                batch = min(left, jobs)
                for params in [] if _waiting(study) else refine_moves(study, space)[:batch]:
                    base = study.best_trial.params
                    moved = _moved(base, params)
                    key = next(k for k in params if base.get(k) != params[k])
                    study.enqueue_trial(params, user_attrs={"refines": study.best_trial.number, "refine_param": key})
                    echo(f"  refining: trial {len(study.trials) - 1} moves trial {study.best_trial.number}'s {moved}")
            study.optimize(objective, n_trials=batch, timeout=timeout, n_jobs=jobs, catch=(Exception,),
                           gc_after_trial=True)
            repeats += sum(1 for t in study.trials[before:] if "repeat_of" in t.user_attrs)
            if deadline is not None and time.monotonic() >= deadline:
                break
        if repeats >= MAX_REPEATS * trials:
            echo(f"  stopped: the sampler kept proposing settings already tried ({repeats} repeats); "
                 "the space may be exhausted")
    return _result(study, cfg, url, metric, marked, parent, out)


def refine_moves(study: Any, space: dict[str, Param]) -> list[dict[str, Any]]:
    """The coordinate moves from the study's best complete trial not yet tried (by any trial, enqueued ones
    included), in the order a greedy coordinate search takes them: one parameter at a time over all its
    :func:`recsys.search_space.moves`, then the next. The parameters go in the order of Optuna's importance on the
    complete trials when refinement began (most important first; the space's order when it cannot be computed;
    kept in the study's ``refine_order`` attribute, so a continued study keeps it), starting at the parameter the
    latest refinement trial moved. Empty when there is no complete trial or every move was tried."""
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return []
    best = max(complete, key=lambda t: t.value)
    trials = study.get_trials(deepcopy=False)
    tried = {_key(t.params or t.system_attrs.get("fixed_params", {})) for t in trials}
    order = [k for k in study.user_attrs.get("refine_order", []) if k in space]
    if not order:
        order = refine_order(study, space)
        study.set_user_attr("refine_order", order)
    last = next((t.user_attrs["refine_param"] for t in reversed(trials) if "refine_param" in t.user_attrs), None)
    at = order.index(last) if last in order else 0
    out = []
    for key in order[at:] + order[:at]:
        if key not in best.params:
            continue
        for value in moves(space[key], best.params[key]):
            params = {**best.params, key: value}
            if _key(params) not in tried:
                out.append(params)
                tried.add(_key(params))
    return out


def refine_order(study: Any, space: dict[str, Param]) -> list[str]:
    """The sampled parameters, the most important first by Optuna's fANOVA on the complete trials (the space's
    order when it cannot be computed: too few trials, or a parameter absent from some)."""
    import optuna

    order = list(space)
    try:
        ranked = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), params=order)
    except Exception:
        return order
    return [k for k in ranked if k in space] + [k for k in order if k not in ranked]


def _key(params: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def _moved(before: dict[str, Any], after: dict[str, Any]) -> str:
    return ", ".join(f"{k} {before.get(k)} -> {v}" for k, v in after.items() if before.get(k) != v)


def _waiting(study: Any) -> bool:
    from optuna.trial import TrialState

    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def _space(cfg: RunConfig) -> tuple[dict[str, Param], dict[str, Choice]]:
    """The model's search space split in two: the parameters Optuna samples, and the encode-time ones."""
    if cfg.model_name not in MODELS:
        raise ValueError(f"unknown model {cfg.model_name!r}; registered models are: {sorted(MODELS)}")
    cls = MODELS[cfg.model_name]
    if not cls.search_space:
        raise ValueError(f"model {cfg.model_name!r} declares no search space: it has nothing to tune")
    check_space(cls.search_space, {f.name for f in dataclasses.fields(cls.Config)}, f"model {cfg.model_name!r}")
    bad = [k for k in cls.encode_time if not isinstance(cls.search_space.get(k), Choice)]
    if bad:
        raise ValueError(f"model {cfg.model_name!r}: encode-time parameters {bad} must be Choice entries of its "
                         "search space")
    encode = {k: cls.search_space[k] for k in cls.encode_time}
    return {k: p for k, p in cls.search_space.items() if k not in encode}, encode


def start_point(cfg: RunConfig, space: dict[str, Param]) -> dict[str, Any]:
    """The config's own value of each sampled parameter (``cfg.model``, else the model's default), where it
    lies in the space: a new study's first trial."""
    defaults = MODELS[cfg.model_name].Config()
    start = {}
    for key, param in space.items():
        value = cfg.model.get(key, getattr(defaults, key))
        inside = (value in param.values if isinstance(param, Choice)
                  else param.low <= value <= param.high)
        if inside:
            start[key] = value
    return start


def encode_combos(encode: dict[str, Choice]) -> list[dict[str, Any]]:
    """Every combination of the encode-time parameters' values (one empty combination when there are none)."""
    values = itertools.product(*(p.values for p in encode.values()))
    return [dict(zip(encode, combo, strict=True)) for combo in values]


def best_encoding(model: Any, combos: list[dict[str, Any]], score: Callable[[], dict[str, float]],
                  key: str) -> tuple[dict[str, Any], dict[str, float]]:
    """Score the fitted ``model`` under each combination of encode-time settings (set on ``model.config``,
    no refit); returns the best combination by ``score()[key]`` and its scores. ``model.config`` is left as
    it was."""
    original = model.config
    best: tuple[dict[str, Any], dict[str, float]] | None = None
    try:
        for combo in combos:
            model.config = dataclasses.replace(original, **combo)
            res = score()
            if best is None or res[key] > best[1][key]:
                best = (combo, res)
    finally:
        model.config = original
    assert best is not None  # combos is never empty
    return best


def suggest(trial: Any, key: str, param: Param) -> Any:
    """One Optuna suggestion for ``param``."""
    if isinstance(param, Choice):
        return trial.suggest_categorical(key, list(param.values))
    if isinstance(param, Int):
        return trial.suggest_int(key, param.low, param.high, step=param.step, log=param.log)
    if isinstance(param, Float):
        return trial.suggest_float(key, param.low, param.high, log=param.log)
    raise TypeError(f"{key}: unknown search-space entry {param!r}")


def _objective(cfg: RunConfig, data: Prepared, space: dict[str, Param], encode: dict[str, Choice], metric: str,
               device: Any, parent: str, echo: Callable[[str], None]) -> Callable[[Any], float]:
    import optuna
    from mlflow.entities import Metric
    from mlflow.entities import Param as MlflowParam
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking.tracking_uri())
    experiment_id = client.get_run(parent).info.experiment_id
    split, protocol = data.split, protocol_for(cfg, data)
    monitored = f"val_{metric}"

    # a trial starts from scratch: no checkpoint folder shared between trials, no warm-start vectors
    fixed = {k: v for k, v in cfg.model.items() if k not in ("checkpoint_dir", "init_vectors", "init_weights")}
    combos = encode_combos(encode)
    # per epoch (pruning): the first encode-time parameter swept, the others at the config's values
    epoch_combos = encode_combos(dict(itertools.islice(encode.items(), 1)))
    valid, _ = eval_parts(split, protocol)  # every user, or the [eval] max_users sample the runs score
    validator = make_validator(valid.histories, valid.targets, protocol, device=device, **valid.kwargs())
    # a model without checkpoints (whose fit does not act on validation) is not validated where the figure
    # cannot matter: before the pruner's warm-up, and at its last epoch when the encode-time sweep follows
    skip_idle = not MODELS[cfg.model_name].checkpoints

    def validator_for(epochs: int | None) -> Callable[[Any], dict[str, float]]:
        done = [0]

        def validate(model: Any) -> dict[str, float]:
            done[0] += 1
            if skip_idle and epochs and done[0] not in validation_epochs(epochs, len(combos) > 1):
                return {}
            return best_encoding(model, epoch_combos, lambda: validator(model), monitored)[1]

        return validate

    def objective(trial: optuna.Trial) -> float:
        params = {**fixed, **{k: suggest(trial, k, p) for k, p in space.items()}}
        twin = _earlier_twin(trial)
        if twin is not None:  # the same fit again: its result, no fit, and not counted in the budget
            trial.set_user_attr("repeat_of", twin.number)
            if "encode_time" in twin.user_attrs:
                trial.set_user_attr("encode_time", twin.user_attrs["encode_time"])
            echo(f"  trial {trial.number}: the settings of trial {twin.number} again: its result, no fit")
            if twin.state.name == "PRUNED":
                raise optuna.TrialPruned(f"repeats pruned trial {twin.number}")
            return float(twin.value)
        run = client.create_run(experiment_id, run_name=f"trial-{trial.number}", tags={
            "mlflow.parentRunId": parent, "optuna_study": trial.study.study_name, "optuna_trial": str(trial.number),
            "model": cfg.model_name, "data_fingerprint": split.fingerprint})
        run_id = run.info.run_id
        for key, value in (("mlflow_run_id", run_id), ("host", socket.gethostname()), ("pid", os.getpid())):
            trial.set_user_attr(key, value)
        client.log_batch(run_id, params=[MlflowParam(f"model.{k}", str(v)[:500]) for k, v in params.items()
                                         if k not in encode])  # encode-time ones: the best, once scored
        t0 = time.perf_counter()
        pruned: list[int] = []
        epochs: int | None = None

        def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
            shown(epoch, metrics)
            stamp = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(f"epoch_{k}", float(v), stamp, epoch) for k, v in metrics.items()
                                              if isinstance(v, int | float) and math.isfinite(v)])
            fault_point(f"tune-trial-{trial.number}")  # crash tests: a kill inside a trial
            if monitored in metrics:  # reported at the share of the trial's epochs done, in percent
                step = round(100 * epoch / epochs) if epochs else epoch
                if f"{monitored}_se" in metrics:
                    trial.set_user_attr(f"se_{step}", float(metrics[f"{monitored}_se"]))
                trial.report(float(metrics[monitored]), step)
                if trial.should_prune():
                    pruned.append(epoch)
                    raise StopTraining(f"pruned by Optuna after epoch {epoch}")

        try:
            model = build_model(cfg.model_name, {"seed": cfg.run.seed, **params}, device,
                                **model_inputs(cfg.model_name, params, data))
            epochs = total_epochs(getattr(model, "config", None))
            shown = progress(f"trial {trial.number}", epochs, echo)
            try:
                model.fit(split.train, on_epoch_end=on_epoch_end, validate=validator_for(epochs))
            finally:
                shown.close()
            if pruned:
                client.set_tag(run_id, "optuna_state", "PRUNED")
                client.set_terminated(run_id, "FINISHED")
                echo(f"  trial {trial.number}: pruned after epoch {pruned[0]} ({_short(params, space)})")
                raise optuna.TrialPruned(f"pruned after epoch {pruned[0]}")
            setting, scores = best_encoding(model, combos, lambda: evaluate_model(
                model, valid.histories, valid.targets, protocol, device=device, **valid.kwargs()), metric)
            value = float(scores[metric])
            params.update(setting)
            if setting:
                trial.set_user_attr("encode_time", setting)
                client.log_batch(run_id, params=[MlflowParam(f"model.{k}", str(v)) for k, v in setting.items()])
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            client.set_tag(run_id, "error", f"{type(exc).__name__}: {exc}"[:5000])
            client.set_tag(run_id, "optuna_state", "FAIL")
            client.set_terminated(run_id, "FAILED")
            echo(f"  trial {trial.number}: failed, {type(exc).__name__}: {str(exc)[:200]}")
            raise
        client.log_metric(run_id, f"val_{metric}", value)
        client.log_metric(run_id, "fit_seconds", time.perf_counter() - t0)
        client.set_tag(run_id, "optuna_state", "COMPLETE")
        client.set_terminated(run_id, "FINISHED")
        echo(f"  trial {trial.number}: val_{metric} {value:.5f} in {time.perf_counter() - t0:.0f} s "
             f"({_short(params, {**space, **encode})})")
        return value

    return objective


def _short(params: dict[str, Any], space: dict[str, Param]) -> str:
    return ", ".join(f"{k}={params[k]}" for k in space)


def _finished(study: Any) -> int:
    """Trials that count against the budget: complete or pruned (a failed one is retried by a new trial), each
    setting once (a trial that repeats an earlier one's sampled settings takes its result and does not count)."""
    from optuna.trial import TrialState

    return sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
               if "repeat_of" not in t.user_attrs)


def _earlier_twin(trial: Any) -> Any:
    """A finished (complete or pruned) earlier trial of the study with the same sampled parameters, or None."""
    from optuna.trial import TrialState

    for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if t.number != trial.number and t.params == trial.params and "repeat_of" not in t.user_attrs:
            return t
    return None


def _alive(pid: Any) -> bool:
    """Whether process ``pid`` still runs on this machine."""
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _fail_stale(study: Any, url: str) -> list[int]:
    """Mark FAIL the trials left RUNNING by a process of this machine that is gone (trials of live processes,
    or of other machines sharing the storage, are left alone)."""
    import optuna
    from optuna.trial import TrialState

    host = socket.gethostname()
    stale = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
             if t.user_attrs.get("host") == host and not _alive(t.user_attrs.get("pid"))]
    storage = optuna.storages.get_storage(url)
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in stale:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, "failed_reason", "left running by a stopped process")
        storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        run_id = t.user_attrs.get("mlflow_run_id")
        if run_id:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking.tracking_uri())
            client.set_tag(run_id, "optuna_state", "FAIL")
            client.set_terminated(run_id, "KILLED")
    return [t.number for t in stale]


def _parent_run(study: Any, cfg: RunConfig, url: str) -> str:
    """The study's MLflow run (created once, its id kept in the study; later calls log under it again)."""
    from mlflow.tracking import MlflowClient

    tracking.setup(cfg.run.experiment)
    client = MlflowClient(tracking.tracking_uri())
    run_id = study.user_attrs.get("mlflow_run_id")
    if run_id:
        try:
            client.get_run(run_id)
            return run_id
        except Exception:  # the MLflow store was reset while the study stayed: start a new parent
            pass
    experiment = client.get_experiment_by_name(cfg.run.experiment)
    run = client.create_run(experiment.experiment_id, run_name=f"tune-{study.study_name}", tags={
        "optuna_study": study.study_name, "optuna_storage": url, "model": cfg.model_name,
        "git_commit": tracking.git_commit()})
    study.set_user_attr("mlflow_run_id", run.info.run_id)
    return run.info.run_id


def _result(study: Any, cfg: RunConfig, url: str, metric: str, marked: list[int], parent: str,
            out: Path) -> TuneResult:
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    counts = {s: sum(1 for t in study.get_trials(deepcopy=False, states=(s,)) if "repeat_of" not in t.user_attrs)
              for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    repeats = sum(1 for t in study.trials if "repeat_of" in t.user_attrs)
    if not counts[TrialState.COMPLETE]:
        raise RuntimeError(f"study {study.study_name}: no trial completed ({counts[TrialState.PRUNED]} pruned, "
                           f"{counts[TrialState.FAIL]} failed); see the trials' MLflow runs for the errors")
    best = study.best_trial
    params = {**cfg.model, **trial_params(best)}
    path = out / f"best_{cfg.model_name}.toml"
    atomic.write_text(path, best_config_toml(cfg.model_name, params, study.study_name, best.number,
                                             f"val_{metric}", float(best.value)))
    client = MlflowClient(tracking.tracking_uri())
    client.log_metric(parent, f"best_val_{metric}", float(best.value), step=len(study.trials))
    client.set_tag(parent, "best_trial", str(best.number))
    client.log_artifact(parent, str(path))
    return TuneResult(study.study_name, url, metric, float(best.value), best.number, params,
                      counts[TrialState.COMPLETE], counts[TrialState.PRUNED], counts[TrialState.FAIL], marked, parent,
                      path, repeats)


def best_config_toml(model: str, params: dict[str, Any], study: str, trial: int, metric: str, value: float) -> str:
    """The best parameters as a ``[models.<model>]`` table for a pipeline config (or a run config's ``[model]``)."""
    lines = [f"# recsys tune: study {study}, best trial {trial}, {metric} {value:.5f} (validation)",
             f"[models.{model}]", f'name = "{model}"']
    lines += [f"{k} = {_toml(v)}" for k, v in sorted(params.items())]
    return "\n".join(lines) + "\n"


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
