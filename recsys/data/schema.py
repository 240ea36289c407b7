"""Column names of the canonical interaction frames shared by every reader and step.

Raw interactions (what readers return, polars)::

    user       Int64 or String   raw user id as in the source
    item       Int64 or String   raw item id as in the source
    timestamp  Int64             epoch seconds
    weight     Float32           1.0 unless the source has ratings/weights
    event      String (nullable) event type when the source has one

Encoded interactions (after IdMap)::

    user_idx   Int32  1..n_users  (0 = padding, never used)
    item_idx   Int32  1..n_items  (0 = padding, never used)
    timestamp, weight, event as above

Quarantine frames hold the offending raw values as strings plus ``row`` (1-based line or
row number in the source file), ``reason`` and ``source`` (the file).
"""

USER = "user"
ITEM = "item"
TIMESTAMP = "timestamp"
WEIGHT = "weight"
EVENT = "event"
USER_IDX = "user_idx"
ITEM_IDX = "item_idx"
ROW = "row"
REASON = "reason"
SOURCE = "source"

RAW_COLUMNS = (USER, ITEM, TIMESTAMP, WEIGHT, EVENT)
ENCODED_COLUMNS = (USER_IDX, ITEM_IDX, TIMESTAMP, WEIGHT, EVENT)
