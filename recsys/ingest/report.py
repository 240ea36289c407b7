"""Row accounting for ingest: every row read is accepted, quarantined or a removed duplicate."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class IngestReport:
    """Counts that must reconcile: ``rows_read == accepted + quarantined + duplicates_removed``.

    ``accepted`` is what remains after the steps so far; filters that remove rows on purpose
    (k-core, minimum length) record their removals in ``filtered`` so the totals still add up:
    ``rows_read == accepted + quarantined + duplicates_removed + sum(filtered.values())``.
    """

    source: str
    rows_read: int = 0
    accepted: int = 0
    quarantined: int = 0
    duplicates_removed: int = 0
    reasons: Counter = field(default_factory=Counter)
    filtered: dict[str, int] = field(default_factory=dict)
    stats: dict[str, int | float | str] = field(default_factory=dict)  # e.g. k-core iterations

    def check(self) -> None:
        """Raise if the counts do not add up (a bug, never a data problem)."""
        total = self.accepted + self.quarantined + self.duplicates_removed + sum(self.filtered.values())
        if total != self.rows_read:
            raise AssertionError(f"row accounting broken for {self.source}: {self.as_dict()}")

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "duplicates_removed": self.duplicates_removed,
            "filtered": dict(self.filtered),
            "reasons": dict(self.reasons),
            "stats": dict(self.stats),
        }

    def summary(self) -> str:
        """One line for logs: ``read 100 = accepted 90 + quarantined 4 + duplicates 6``."""
        parts = [f"accepted {self.accepted:,}", f"quarantined {self.quarantined:,}",
                 f"duplicates {self.duplicates_removed:,}"]
        parts += [f"{k} {v:,}" for k, v in self.filtered.items()]
        return f"{self.source}: read {self.rows_read:,} = " + " + ".join(parts)
