"""experiments/bench_item2vec.py: the rules part (a rerun of some rules merged into the report) and the sets part."""

from __future__ import annotations

import sys
from pathlib import Path

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
           "synthetic": {"adagrad": _row(0.2)}}
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

    tuned = {"ours": Item2VecConfig(dim=16, epochs=2, negatives=5, subsample=1e-3, batch_size=512),
             "gensim in-out": Item2VecConfig(dim=16, epochs=2, negatives=5, lr=0.1)}
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
