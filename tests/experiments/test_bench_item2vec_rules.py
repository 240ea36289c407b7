"""experiments/bench_item2vec.py: the rules part (a rerun of some rules merged into the report) and the sets part."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments"))
import bench_item2vec  # noqa: E402


def _row(ndcg: float, seeds: int = 3) -> dict:
    return {"runs": [{"val_ndcg_10": ndcg}] * seeds, "diverged": 0, "val_ndcg_10": ndcg, "val_hr_10": 2 * ndcg,
            "fit_s": 1.0}


def test_a_rerun_of_some_rules_replaces_their_rows_and_keeps_the_others() -> None:
    old = {"seeds": 3, "rules": {}, "beauty": {"adagrad (default)": {**_row(0.05), "run": 1}, "mean": _row(0.03)},
           "ml-1m-sample": {"mean": _row(0.01)}}
    new = {"seeds": 3, "rules": {}, "synthetic_events": 1000, "beauty": {"adagrad decay 0.9": _row(0.06)},
           "synthetic": {"adagrad": {**_row(0.2), "synthetic_events": 1000}}}
    got = bench_item2vec.merge_rules(old, new, run=2)
    # the legacy label is renamed; rows not rerun keep their run (1 when the earlier report did not say)
    assert set(got["beauty"]) == {"adagrad", "mean", "adagrad decay 0.9"}
    assert got["beauty"]["adagrad"]["val_ndcg_10"] == 0.05 and got["beauty"]["adagrad"]["run"] == 1
    assert got["beauty"]["adagrad decay 0.9"]["run"] == 2 and got["synthetic"]["adagrad"]["run"] == 2
    assert got["ml-1m-sample"] == old["ml-1m-sample"] and got["synthetic_events"] == 1000
    md = "\n".join(bench_item2vec.rules_markdown(got))
    assert "| synthetic (1,000 events) | adagrad | 0.2000 | 0.4000 | 1.0 | 0 of 3 | 3 | 2 |" in md
    assert "| beauty | mean | 0.0300 | 0.0600 | 1.0 | 0 of 3 | 3 | 1 |" in md
    assert bench_item2vec.merge_rules(None, new, run=1) is new


def test_each_synthetic_row_is_labelled_with_the_size_its_own_run_fitted() -> None:
    """A later run at another size must not relabel earlier rows: a row's own record wins, and a row from before
    per-row records takes the size from its run's command (5M when the command gave none)."""
    runs = [{"command": "python experiments/bench_item2vec.py --parts rules"},
            {"command": "python experiments/bench_item2vec.py --parts rules --merge --rules adagrad;mean "
                        "--rule-sets synthetic --synthetic-events 1000000"},
            {"command": "python experiments/bench_item2vec.py --parts rules --merge --rule-sets beauty"}]
    rules = {"synthetic_events": 5_000_000,  # what the last run (beauty only) left at the top level
             "synthetic": {"adagrad": {**_row(0.2), "run": 2}, "mean": {**_row(0.1), "run": 1},
                           "adagrad decay 0.99": {**_row(0.3), "run": 3, "synthetic_events": 20_000}}}
    md = "\n".join(bench_item2vec.rules_markdown(rules, runs))
    assert "| synthetic (1,000,000 events) | adagrad |" in md
    assert "| synthetic (5,000,000 events) | mean |" in md
    assert "| synthetic (20,000 events) | adagrad decay 0.99 |" in md


def test_the_rules_part_runs_and_a_merged_rerun_keeps_the_earlier_rows(tmp_path: Path) -> None:
    import json

    base = ["--parts", "rules", "--rule-sets", "synthetic", "--synthetic-events", "20000", "--seeds", "1",
            "--out", str(tmp_path), "--report-name", "rules"]
    bench_item2vec.main([*base, "--rules", "adagrad"])
    bench_item2vec.main([*base, "--rules", "adagrad decay 0.9", "--merge"])
    got = json.loads((tmp_path / "rules.json").read_text())["rules"]["synthetic"]
    assert set(got) == {"adagrad", "adagrad decay 0.9"} and [got[k]["run"] for k in sorted(got)] == [1, 2]
    assert all(0 < v["val_ndcg_10"] <= 1 and v["diverged"] == 0 for v in got.values())
    md = (tmp_path / "rules.md").read_text()
    assert "| synthetic (20,000 events) | adagrad decay 0.9 |" in md and "| synthetic (20,000 events) | adagrad |" in md


def test_the_sets_part_judges_the_library_default_against_gensim_at_its_own_settings() -> None:
    """Where the library default is not the tuner's choice, it is fitted beside gensim at the default's settings,
    and the verdict and throughput ratio the must-show reads are the default's."""
    import dataclasses

    from recsys.models.item2vec import Item2VecConfig

    tuned = {"ours": Item2VecConfig(dim=16, epochs=2, negatives=5, subsample=1e-3, batch_size=512, user_decay=0.4),
             "gensim in-out": Item2VecConfig(dim=16, epochs=2, negatives=5, lr=0.1, user_decay=0.2)}
    default = Item2VecConfig()
    assert dataclasses.replace(default, workers=1) != tuned["ours"]
    out = bench_item2vec.sets_part(["synthetic"], tuned, seeds=1, workers=1, synthetic_events=10_000)
    p = out["synthetic"]
    assert list(p["runs"]) == ["ours", "gensim in-out", "gensim at our config", "ours, library default",
                               "gensim at the library default"]
    assert out["configs"]["gensim at the library default"]["subsample"] == default.subsample
    assert out["configs"]["gensim at the library default"]["update"] == "-"  # ours-only settings: not gensim's
    gensim = [k for k in p["mean"] if k.startswith("gensim")]
    assert p["gensim_best"] == max(gensim, key=lambda k: p["mean"][k]["ndcg_10"])
    mine, best = p["mean"]["ours, library default"], p["mean"][p["gensim_best"]]
    assert p["default_at_least_gensim_best"] == {m: mine[m] >= best[m] for m in ("ndcg_10", "hr_10")}
    ours_s, gensim_s = (bench_item2vec._median_fit(p["runs"][k])
                        for k in ("ours, library default", "gensim at the library default"))
    assert p["throughput_ratio_default_over_gensim"] == gensim_s / ours_s
    md = "\n".join(bench_item2vec.sets_markdown({**out, "runs": []}))
    assert "throughput library default / gensim at the library default:" in md
    # each fit records the decay it encoded users with; the report names what "auto" chose
    assert default.user_decay == "auto" and tuned["ours"].user_decay != "auto"
    chose = [r["user_decay"] for r in p["runs"]["ours, library default"]]
    assert all(isinstance(d, float) and 0 < d <= 1 for d in chose)
    assert p["runs"]["ours"][0]["user_decay"] == tuned["ours"].user_decay
    gensim_chose = ", ".join(str(r["user_decay"]) for r in p["runs"]["gensim at the library default"])
    assert (f'user_decay "auto" chose, per seed: ours, library default {chose[0]}; '
            f"gensim at the library default {gensim_chose}.") in md


_ROW = {k: 2 if k == "epochs" else "-" for k in bench_item2vec.TUNED}
_CONFIGS = {"ours": _ROW, "gensim in-out": _ROW, "gensim at our config": _ROW}


def one_run(seed: int, ours: float, gensim: float, commit: str, name: str = "synthetic") -> dict:
    """A sets part of one seed on one set, as :func:`bench_item2vec.sets_part` returns it (hand-made scores)."""
    def rec(ndcg: float) -> dict:
        return {"seed": seed, "fit_s": 2.0 + seed, "lr_backoffs": 0, "hr_10": 2 * ndcg, "ndcg_10": ndcg,
                "hr_20": 3 * ndcg, "ndcg_20": 1.5 * ndcg}
    runs = {"ours": [rec(ours)], "gensim in-out": [rec(gensim)], "gensim at our config": [rec(gensim / 2)]}
    p = {"train_events": 100, "users": 10, "items": 5, "synthetic_events": 1000, "commit": commit,
         **bench_item2vec.summarize_set(runs, 100, _CONFIGS, default_is_ours=True)}
    return {"seeds": 1, "default_is_ours": True, "configs": _CONFIGS, name: p}


def test_a_set_run_a_seed_at_a_time_pools_its_seeds_and_a_rerun_of_a_seed_replaces_it() -> None:
    """``--first-seed`` with ``--merge``: a long set's seeds come from separate runs and are summarised together."""
    row, configs = _ROW, _CONFIGS
    first = one_run(0, ours=0.10, gensim=0.30, commit="aaa")
    first["synthetic"]["run"] = 1
    second = bench_item2vec.merge_sets(first, one_run(1, ours=0.50, gensim=0.10, commit="bbb"), run=2)
    p = second["synthetic"]
    assert p["seeds"] == 2 and [r["seed"] for r in p["runs"]["ours"]] == [0, 1]
    assert p["mean"]["ours"]["ndcg_10"] == 0.3 and p["mean"]["gensim in-out"]["ndcg_10"] == 0.2
    assert abs(p["sd"]["ours"]["ndcg_10"] - 0.28284) < 1e-5  # sample sd of 0.1 and 0.5
    assert p["ours_at_least_gensim_best"] == {"ndcg_10": True, "hr_10": True}  # neither run alone says so
    assert p["commit"] == "aaa, bbb" and p["run"] == "1, 2"
    assert "### synthetic (10 users, 5 items, 100 training events; 2 seeds, commit aaa, bbb, run 1, 2)" in \
        "\n".join(bench_item2vec.sets_markdown({**second, "runs": []}))
    # the same seed again replaces the set; other configurations replace everything
    again = bench_item2vec.merge_sets(second, one_run(1, ours=0.2, gensim=0.1, commit="ccc"), run=3)
    assert again["synthetic"]["seeds"] == 1 and again["synthetic"]["mean"]["ours"]["ndcg_10"] == 0.2
    other = one_run(2, ours=0.2, gensim=0.1, commit="ccc")
    other["configs"] = {**configs, "ours": {**row, "epochs": 3}}
    assert bench_item2vec.merge_sets(second, other, run=3) is other


def test_sets_part_records_each_fits_seed_from_first_seed() -> None:
    from recsys.models.item2vec import Item2VecConfig

    small = Item2VecConfig(dim=8, epochs=1, negatives=2, batch_size=256)
    out = bench_item2vec.sets_part(["synthetic"], {"ours": small, "gensim in-out": small}, seeds=1, workers=1,
                                   synthetic_events=5_000, first_seed=4)
    assert {r["seed"] for rs in out["synthetic"]["runs"].values() for r in rs} == {4}


def test_merge_from_brings_in_a_set_run_elsewhere_and_renumbers_its_runs(tmp_path: Path) -> None:
    """A long set run in another worktree at the same configurations joins the report: its runs are appended, its
    set keeps its own run numbers shifted past the report's, and a set in both with other seeds is pooled."""
    import json

    def meta(commit: str) -> dict:
        return {"command": f"python experiments/bench_item2vec.py --parts sets ({commit})", "commit": commit}

    here = {"runs": [meta("aaa"), meta("bbb")], "shared": {}, "part_runs": {"sets": 2},
            "sets": {**one_run(0, ours=0.1, gensim=0.3, commit="bbb", name="beauty"),
                     **one_run(0, ours=0.2, gensim=0.1, commit="bbb")}}
    here["sets"]["beauty"]["run"] = here["sets"]["synthetic"]["run"] = 2
    there = {"runs": [meta("ccc")], "shared": {}, "part_runs": {"sets": 1},
             "sets": one_run(1, ours=0.4, gensim=0.1, commit="ccc")}
    there["sets"]["synthetic"]["run"] = 1
    (tmp_path / "r.json").write_text(json.dumps(here))
    (tmp_path / "other.json").write_text(json.dumps(there))
    got = bench_item2vec.main(["--out", str(tmp_path), "--report-name", "r", "--merge-from",
                               str(tmp_path / "other.json")])
    assert [r["commit"] for r in got["runs"]] == ["aaa", "bbb", "ccc"] and got["part_runs"]["sets"] == 3
    assert got["sets"]["beauty"] == here["sets"]["beauty"]  # only in this report: kept as it was
    p = got["sets"]["synthetic"]
    assert p["run"] == "2, 3" and p["commit"] == "bbb, ccc" and p["seeds"] == 2
    assert abs(p["mean"]["ours"]["ndcg_10"] - 0.3) < 1e-9
    md = (tmp_path / "r.md").read_text()
    assert "### synthetic (10 users, 5 items, 100 training events; 2 seeds, commit bbb, " \
        "ccc, run 2, 3)" in md and "3. Command: `python experiments/bench_item2vec.py --parts sets (ccc)`" in md
    # the other report began as a copy of this one (run with --merge there): the shared runs are not repeated
    copy = {"runs": [meta("aaa"), meta("bbb"), meta("ccc")], "shared": {}, "part_runs": {"sets": 3},
            "sets": {**one_run(1, ours=0.4, gensim=0.1, commit="ccc"),
                     "beauty": {**here["sets"]["beauty"], "run": 2}}}
    copy["sets"]["synthetic"]["run"] = 3
    (tmp_path / "r.json").write_text(json.dumps(here))
    (tmp_path / "copy.json").write_text(json.dumps(copy))
    got = bench_item2vec.main(["--out", str(tmp_path), "--report-name", "r", "--merge-from",
                               str(tmp_path / "copy.json")])
    assert [r["commit"] for r in got["runs"]] == ["aaa", "bbb", "ccc"] and got["part_runs"]["sets"] == 3
    assert got["sets"]["synthetic"]["run"] == "2, 3" and got["sets"]["synthetic"]["seeds"] == 2
    assert got["sets"]["beauty"]["run"] in (2, "2")  # the copy of the same seeds: the same run
    there["sets"]["configs"] = {**_CONFIGS, "ours": {**_ROW, "epochs": 3}}
    (tmp_path / "other.json").write_text(json.dumps(there))
    with pytest.raises(SystemExit, match="other configurations"):
        bench_item2vec.main(["--out", str(tmp_path), "--report-name", "r", "--merge-from",
                             str(tmp_path / "other.json")])


def test_the_throughput_part_times_both_sides_at_the_library_default() -> None:
    """Both sides fit at ``Item2VecConfig()`` (its row rule recorded with it); the ratio is gensim's median fit time
    over ours, and both last fits are scored."""
    import statistics

    from recsys.models.item2vec import Item2VecConfig

    out = bench_item2vec.throughput_part(["synthetic"], repeats=1, workers=1, synthetic_events=5_000)
    default = Item2VecConfig()
    assert out["config"]["adagrad_decay_per"] == default.adagrad_decay_per
    assert out["config"]["adagrad_decay"] == default.adagrad_decay and out["config"]["dim"] == default.dim
    p = out["synthetic"]
    assert p["throughput_ratio_ours_over_gensim"] == statistics.median(p["fit_s"]["gensim"]) / statistics.median(
        p["fit_s"]["ours"])
    assert all(0 < v <= 1 for v in p["test_ndcg_10_last_fit"].values())
    md = "\n".join(bench_item2vec.throughput_markdown(out))
    assert "'adagrad_decay_per': 'step'" in md and f"| synthetic | {p['train_events']} |" in md


def test_a_change_of_the_row_rule_is_a_change_of_configuration_for_merges(capsys) -> None:
    """The sets part records every setting of our rows; a merge whose table configurations agree but whose row rule
    differs replaces the sets (no pooling of two rules' seeds, no keeping a set fitted with the old rule). A part
    from before the record merges on the table alone."""
    def full(per: str) -> dict:
        return {"ours": {"update": "adagrad", "adagrad_decay": 0.999, "adagrad_decay_per": per, "dim": 2}}

    first = one_run(0, ours=0.1, gensim=0.3, commit="aaa")
    first["full_configs"] = full("update")
    other_set = one_run(0, ours=0.1, gensim=0.3, commit="aaa", name="beauty")["beauty"]
    first["beauty"] = other_set
    second = {**one_run(1, ours=0.5, gensim=0.1, commit="bbb"), "full_configs": full("step")}
    assert bench_item2vec.merge_sets(first, second, run=2) is second  # beauty (old rule) is not kept either
    assert "the sets it did not rerun are dropped: beauty" in capsys.readouterr().err  # and it says so
    same = {**one_run(1, ours=0.5, gensim=0.1, commit="bbb"), "full_configs": full("update")}
    merged = bench_item2vec.merge_sets(first, same, run=2)
    assert merged["synthetic"]["seeds"] == 2 and "beauty" in merged
    # a record written before a field existed: the field counts as its default (which keeps the earlier fit)
    newer = {**same, "full_configs": {"ours": {**full("update")["ours"], "skip_target_negatives": False}}}
    assert bench_item2vec.merge_sets(first, newer, run=2)["synthetic"]["seeds"] == 2
    changed = {**same, "full_configs": {"ours": {**full("update")["ours"], "skip_target_negatives": True}}}
    assert bench_item2vec.merge_sets(first, changed, run=2) is changed
    legacy = {k: v for k, v in first.items() if k != "full_configs"}
    assert bench_item2vec.merge_sets(legacy, second, run=2)["synthetic"]["seeds"] == 2
    md = "\n".join(bench_item2vec.sets_markdown({**second, "runs": []}))
    assert "Row rule of our rows: ours adagrad_decay 0.999 per step." in md


def test_sets_part_records_the_full_configuration_of_our_rows() -> None:
    from recsys.models.item2vec import Item2VecConfig

    small = Item2VecConfig(dim=8, epochs=1, negatives=2, batch_size=256, adagrad_decay_per="update")
    out = bench_item2vec.sets_part(["synthetic"], {"ours": small, "gensim in-out": small}, seeds=1, workers=1,
                                   synthetic_events=5_000)
    got = out["full_configs"]
    assert set(got) == {"ours", "ours, library default"}  # gensim rows have no row rule
    assert got["ours"]["adagrad_decay_per"] == "update" and got["ours"]["dim"] == 8 and "seed" not in got["ours"]
    assert got["ours, library default"]["adagrad_decay_per"] == Item2VecConfig().adagrad_decay_per


def _with_default_rows(seeds: list[int], ours_default: float, gensim_default: float, full: dict) -> dict:
    """A sets part with the library default's rows (hand-made scores; the default is not the tuner's choice)."""
    def rec(seed: int, ndcg: float) -> dict:
        return {"seed": seed, "fit_s": 2.0, "lr_backoffs": 0, "hr_10": 2 * ndcg, "ndcg_10": ndcg, "hr_20": 3 * ndcg,
                "ndcg_20": 1.5 * ndcg}
    scores = {"ours": 0.1, "gensim in-out": 0.3, "gensim at our config": 0.2,
              "ours, library default": ours_default, "gensim at the library default": gensim_default}
    configs = {label: _ROW for label in scores}
    runs = {label: [rec(s, v) for s in seeds] for label, v in scores.items()}
    p = {"train_events": 100, "users": 10, "items": 5, "synthetic_events": 1000, "commit": "aaa", "run": 1,
         **bench_item2vec.summarize_set(runs, 100, configs, default_is_ours=False)}
    return {"seeds": len(seeds), "default_is_ours": False, "configs": configs, "full_configs": full, "synthetic": p}


def test_rows_refits_only_the_named_rows_and_keeps_the_others_at_their_configuration() -> None:
    """``--rows``: after a new library default only its row is fitted; the gensim rows keep their fits and the set's
    verdict is recomputed. A row whose configuration changed but is not among the rows stops the merge; the same
    configuration with new seeds pools them (the report then lists each row's seeds)."""
    rule = {"update": "adagrad", "adagrad_decay": 0.999, "adagrad_decay_per": "step", "dim": 2}
    old_full = {"ours": rule, "ours, library default": {**rule, "saturate": 0.0}}
    new_full = {"ours": rule, "ours, library default": {**rule, "saturate": 6.0}}
    report = _with_default_rows([0, 1], ours_default=0.25, gensim_default=0.35, full=old_full)
    assert report["synthetic"]["default_at_least_gensim_best"]["ndcg_10"] is False
    fitted = _with_default_rows([0, 1], ours_default=0.4, gensim_default=0.0, full=new_full)
    new = {**fitted, "synthetic": {k: v for k, v in fitted["synthetic"].items() if k not in ("mean", "sd", "run")}}
    new["synthetic"]["runs"] = {"ours, library default": fitted["synthetic"]["runs"]["ours, library default"]}
    new["synthetic"]["commit"] = "bbb"
    merged = bench_item2vec.merge_rows(report, new, ["ours, library default"], run=2)
    p = merged["synthetic"]
    assert p["mean"]["ours, library default"]["ndcg_10"] == 0.4  # replaced: another configuration
    assert p["mean"]["gensim at the library default"]["ndcg_10"] == 0.35  # kept
    assert p["default_at_least_gensim_best"] == {"ndcg_10": True, "hr_10": True}
    assert p["commit"] == "aaa, bbb" and p["run"] == "1, 2" and merged["full_configs"] == new_full
    # the tuner's row changed too, and is not refitted: its old fits no longer describe it
    stale = {**new, "full_configs": {**new_full, "ours": {**rule, "dim": 3}}}
    with pytest.raises(SystemExit, match="report's ours ran another configuration"):
        bench_item2vec.merge_rows(report, stale, ["ours, library default"], run=2)
    # more seeds for two rows at the same configuration: pooled with the report's
    extra = _with_default_rows([2], ours_default=0.31, gensim_default=0.29, full=old_full)
    more = {**extra, "synthetic": {k: v for k, v in extra["synthetic"].items() if k not in ("mean", "sd", "run")}}
    rows = ["ours, library default", "gensim at the library default"]
    more["synthetic"]["runs"] = {label: extra["synthetic"]["runs"][label] for label in rows}
    pooled = bench_item2vec.merge_rows(report, more, rows, run=2)["synthetic"]
    assert pooled["row_seeds"]["ours, library default"] == [0, 1, 2] and pooled["row_seeds"]["ours"] == [0, 1]
    assert abs(pooled["mean"]["ours, library default"]["ndcg_10"] - 0.27) < 1e-9
    assert abs(pooled["mean"]["gensim at the library default"]["ndcg_10"] - (0.35 * 2 + 0.29) / 3) < 1e-5
    md = "\n".join(bench_item2vec.sets_markdown({**report, "synthetic": pooled, "runs": []}))
    assert "2-3 seeds, per row below" in md and "| 2.00 | 0 | 0, 1, 2 |" in md
    md = "\n".join(bench_item2vec.sets_markdown({**merged, "runs": []}))
    assert "ours, library default adagrad_decay 0.999 per step, saturate 6.0." in md
    # a set the report lacks cannot take rows alone
    with pytest.raises(SystemExit, match="no games set"):
        bench_item2vec.merge_rows(report, {**more, "games": more["synthetic"]}, rows, run=2)


def test_sets_part_with_rows_fits_only_those() -> None:
    from recsys.models.item2vec import Item2VecConfig

    small = Item2VecConfig(dim=8, epochs=1, negatives=2, batch_size=256)
    tuned = {"ours": small, "gensim in-out": small}
    out = bench_item2vec.sets_part(["synthetic"], tuned, seeds=1, workers=1, synthetic_events=5_000,
                                   rows=["ours, library default"])
    assert list(out["synthetic"]["runs"]) == ["ours, library default"] and "mean" not in out["synthetic"]
    assert "gensim in-out" in out["configs"]  # every row's configuration, for the merge to check
    with pytest.raises(SystemExit, match="no row 'ours, default'"):
        bench_item2vec.sets_part(["synthetic"], tuned, seeds=1, workers=1, synthetic_events=5_000,
                                 rows=["ours, default"])


def test_a_field_missing_from_an_old_record_reads_as_the_value_before_it_existed() -> None:
    """A record written before ``saturate`` existed ran without it (0), whatever the default becomes; every field
    :data:`ADDED_FIELDS` names is an ``Item2VecConfig`` field."""
    import dataclasses

    from recsys.models.item2vec import Item2VecConfig

    fields = {f.name for f in dataclasses.fields(Item2VecConfig)}
    assert set(bench_item2vec.ADDED_FIELDS) <= fields
    old = bench_item2vec._with_defaults({"dim": 2})
    assert old["saturate"] == 0.0 and old["skip_target_negatives"] is False and old["dim"] == 2
    assert bench_item2vec._with_defaults({"saturate": 6.0})["saturate"] == 6.0
