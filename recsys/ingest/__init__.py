"""Read and validate interaction logs: one reader per format (delimited text, Parquet, one-sequence-per-line,
MovieLens), text decoding and compression, timestamp parsing, row validation with a quarantine, the canonical
schema, the errors that name a file, row and field, and the row accounting of an ingest."""
