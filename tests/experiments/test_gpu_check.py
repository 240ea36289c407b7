"""experiments/gpu_check.py's dry run: every section of the GPU check runs on the CPU at toy size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_dry_run_writes_every_section(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "experiments/gpu_check.py", "--dry-run", "--out", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads((tmp_path / "gpu_check.json").read_text())
    assert r["dry_run"] and r["device"] == "cpu" and r["verdicts"] == {}
    assert r["cuda_tests"]["ok"] and r["cuda_tests"].get("failed", 0) == 0
    assert r["parity"]["item2vec"]["within"] and r["parity"]["two_tower"]["within"]  # cpu vs cpu: equal
    assert r["throughput"]["ours"]["events_per_s"] > 0 and r["throughput"]["gensim_2_workers"]["workers"] == 2
    assert r["transformer_epoch"]["fp32"]["second_epoch_s"] > 0
    assert 0 < r["ensemble"]["test_ndcg_10"] <= 1
    md = (tmp_path / "gpu_check.md").read_text()
    for section in ("## CUDA tests", "parity", "## item2vec throughput", "seconds per epoch", "## Ensemble"):
        assert section in md


def test_gpu_check_refuses_to_run_without_cuda_unless_dry() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the full check would run")
    out = subprocess.run([sys.executable, "experiments/gpu_check.py"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2 and "no CUDA device here" in out.stderr and "--dry-run" in out.stderr
