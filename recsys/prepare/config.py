"""What a log is and how it is prepared: the ``[data]`` table of a run or pipeline config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from recsys.ingest.schema import ColumnMapping


@dataclass
class DataConfig:
    """Which log to read and how to clean and split it."""

    name: str = "synthetic"
    path: str = ""  # empty: the built-in synthetic data set
    format: str = "auto"
    user_col: str = "user"
    item_col: str = "item"
    timestamp_col: str = "timestamp"
    weight_col: str = ""
    event_col: str = ""
    encoding: str = "utf8"
    max_bad_fraction: float = 0.05
    max_id_len: int = 256  # longer user/item ids are quarantined (serving refuses them too)
    repeat_policy: Literal["keep_all", "first", "last", "sum_weight"] = "keep_all"
    user_k: int = 0  # k-core thresholds; 0 = no k-core filtering
    item_k: int = 0
    min_length: int = 3
    split: Literal["leave_last_out", "temporal"] = "leave_last_out"
    cut_quantile: float = 0.9
    # how the log is prepared: "memory" (the whole log in RAM), "outofcore" (hash partitions on disk, memory
    # set by partition_rows), "spark" (a PySpark job; needs the `spark` extra and a Java runtime)
    engine: Literal["memory", "outofcore", "spark"] = "memory"
    partition_rows: int = 5_000_000  # outofcore: accepted rows per partition (about 1 GB of memory per 5M)
    work_dir: str = ""  # outofcore / spark scratch folder; "" = beside the prepared folder
    spark_master: str = "local[*]"  # spark: the master URL (local mode by default; a cluster's URL otherwise)
    # built-in synthetic data set size (used when path is empty)
    synthetic_users: int = 5_000
    synthetic_items: int = 2_000
    synthetic_events: int = 200_000

    def mapping(self) -> ColumnMapping:
        """The log's column names as the readers take them."""
        from recsys.ingest.schema import ColumnMapping

        return ColumnMapping(user=self.user_col, item=self.item_col, timestamp=self.timestamp_col,
                             weight=self.weight_col or None, event=self.event_col or None)
