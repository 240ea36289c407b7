"""What a log is and how it is prepared: the ``[data]`` table of a run or pipeline config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from recsys.ingest.schema import ColumnMapping


@dataclass
class DataConfig:
    """Which log to read and how to clean and split it."""

    name: str = "synthetic"  # the data set's name in MLflow tags and reports
    path: str = ""  # a log file or a folder of them; empty: the built-in synthetic data set
    format: str = "auto"  # by file name; csv, tsv, parquet, seq-per-user, seq-per-event, ml-100k, ml-1m, ...
    user_col: str = "user"  # column names in CSV/TSV/Parquet logs
    item_col: str = "item"  # the item id column (same formats)
    timestamp_col: str = "timestamp"  # epoch seconds or milliseconds (by magnitude) or ISO-8601 text
    weight_col: str = ""  # optional: an interaction weight (rating, count); "" = 1 per event
    event_col: str = ""  # optional: an event type kept beside each interaction
    encoding: str = "utf8"  # text encoding of CSV/TSV logs (e.g. "latin-1"); decoded as a stream
    max_bad_fraction: float = 0.05  # fail the read when more than this share of rows is quarantined
    max_id_len: int = 256  # longer user/item ids are quarantined (serving refuses them too)
    # repeated (user, item): keep every event (sequence models learn from repeats), the first, the last, or one
    # event with the summed weight
    repeat_policy: Literal["keep_all", "first", "last", "sum_weight"] = "keep_all"
    user_k: int = 0  # k-core thresholds; 0 = no k-core filtering
    item_k: int = 0  # items with fewer events are dropped (iterated with user_k to a fixed point); 0 = off
    min_length: int = 3  # users with fewer events are dropped: 3 leaves one train, one validation, one test event
    # leave-last-out (each user's last event is test, the one before validation: the published protocol) or a
    # global time cut (temporal: events after the cut_quantile of all timestamps are held out)
    split: Literal["leave_last_out", "temporal"] = "leave_last_out"
    cut_quantile: float = 0.9  # temporal: the time cut as a quantile of all timestamps, in (0, 1)
    # how the log is prepared: "memory" (the whole log in RAM), "outofcore" (hash partitions on disk, memory
    # set by partition_rows), "spark" (a PySpark job; needs the `spark` extra and a Java runtime)
    engine: Literal["memory", "outofcore", "spark"] = "memory"
    partition_rows: int = 5_000_000  # outofcore: accepted rows per partition (about 1 GB of memory per 5M)
    work_dir: str = ""  # outofcore / spark scratch folder; "" = beside the prepared folder
    spark_master: str = "local[*]"  # spark: the master URL (local mode by default; a cluster's URL otherwise)
    # built-in synthetic data set size (used when path is empty)
    synthetic_users: int = 5_000  # the built-in set's users
    synthetic_items: int = 2_000  # the built-in set's catalogue size
    synthetic_events: int = 200_000  # the built-in set's events (about 40 per user at the default size)

    def mapping(self) -> ColumnMapping:
        """The log's column names as the readers take them."""
        from recsys.ingest.schema import ColumnMapping

        return ColumnMapping(user=self.user_col, item=self.item_col, timestamp=self.timestamp_col,
                             weight=self.weight_col or None, event=self.event_col or None)
