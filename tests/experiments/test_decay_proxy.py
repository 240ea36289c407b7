"""experiments/decay_proxy.py: the report of user_decay="auto" against validation, on a small log."""

from __future__ import annotations

import sys
from pathlib import Path

from support import clustered_split

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments"))
import decay_proxy  # noqa: E402

from recsys.models.item2vec import Item2VecConfig  # noqa: E402


def _small(**kw: object) -> Item2VecConfig:
    return Item2VecConfig(**{"dim": 16, "epochs": 3, "batch_size": 512, "negatives": 5, **kw})


def test_the_report_marks_validations_best_and_the_choice_of_auto(monkeypatch, tmp_path) -> None:
    split = clustered_split()
    monkeypatch.setattr(decay_proxy, "load_set", lambda name, events: split)
    monkeypatch.setattr(decay_proxy, "REPORTS", tmp_path)
    monkeypatch.setattr(decay_proxy, "Item2VecConfig", _small)  # a small, fast fit
    res = decay_proxy.main(["--sets", "ml-100k", "--workers", "1", "--out-name", "dp"])
    r = res["sets"]["ml-100k"]
    assert set(r["valid"]) == set(r["proxy"]) == {str(d) for d in decay_proxy.GRID}
    best = max(decay_proxy.GRID, key=lambda d: r["valid"][str(d)])
    assert r["valid_choice"] == best
    assert r["proxy_choice"] == max(decay_proxy.GRID, key=lambda d: r["proxy"][str(d)])
    assert r["proxy_choice_over_valid_best"] == round(r["valid"][str(r["proxy_choice"])] / r["valid"][str(best)], 4)
    md = (tmp_path / "dp.md").read_text()
    assert f"**{r['valid'][str(best)]:.4f}**" in md and f"_{r['proxy'][str(r['proxy_choice'])]:.4f}_" in md
