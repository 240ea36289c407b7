"""What every report of ``experiments/`` records about where it ran: the commit and the machine.

    commit_now()   # "85cb124", or "85cb124+dirty" when tracked files outside experiments/reports changed
"""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def commit_now() -> str:
    """HEAD's short hash, ``+dirty`` when tracked files other than the reports (this harness's own output, which
    a run merges into) differ from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":(exclude)experiments/reports"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return head.stdout.strip() + ("+dirty" if dirty else "")


def machine() -> str:
    """Host, architecture and torch's thread count, e.g. ``vm x86_64, torch threads 2``."""
    import torch

    return f"{platform.node() or 'vm'} {platform.machine()}, torch threads {torch.get_num_threads()}"
