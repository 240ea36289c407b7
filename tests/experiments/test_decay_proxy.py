"""experiments/decay_proxy.py: the report of user_decay="auto" against validation, on a small log."""

from __future__ import annotations

import sys
from pathlib import Path

from support import clustered_split

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments"))
import decay_proxy  # noqa: E402

from recsys.models.item2vec import Item2VecConfig, auto_decay_choice  # noqa: E402


def _small(**kw: object) -> Item2VecConfig:
    return Item2VecConfig(**{"dim": 16, "epochs": 3, "batch_size": 512, "negatives": 5, **kw})


def test_the_report_gives_validations_best_and_the_choice_of_auto_per_seed(monkeypatch, tmp_path) -> None:
    split = clustered_split()
    monkeypatch.setattr(decay_proxy, "load_set", lambda name, events: split)
    monkeypatch.setattr(decay_proxy, "REPORTS", tmp_path)
    monkeypatch.setattr(decay_proxy, "Item2VecConfig", _small)  # a small, fast fit
    res = decay_proxy.main(["--sets", "ml-100k", "--workers", "1", "--seeds", "2", "--out-name", "dp"])
    runs = res["sets"]["ml-100k"]
    assert [r["seed"] for r in runs] == [0, 1]
    for r in runs:
        assert set(r["valid"]) == set(r["proxy"]) == {str(d) for d in decay_proxy.GRID}
        best = max(decay_proxy.GRID, key=lambda d: r["valid"][str(d)])
        assert r["valid_choice"] == best
        proxy = {float(d): v for d, v in r["proxy"].items()}
        assert r["proxy_best"] == max(decay_proxy.GRID, key=lambda d: (proxy[d], d))
        assert r["auto_choice"] == auto_decay_choice(proxy)
        assert r["auto_over_valid_best"] == round(r["valid"][str(r["auto_choice"])] / r["valid"][str(best)], 4)
        assert r["auto_over_default"] == round(r["valid"][str(r["auto_choice"])] / r["valid"]["0.4"], 4)
    mean = {d: sum(r["valid"][str(d)] for r in runs) / 2 for d in decay_proxy.GRID}
    md = (tmp_path / "dp.md").read_text()
    assert f"**{max(mean.values()):.4f}**" in md
    assert f"| {runs[0]['auto_choice']}, {runs[1]['auto_choice']} |" in md
