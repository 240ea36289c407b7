"""Turn validated interactions into what models train on: dedupe and k-core filters, id maps, splits,
sequences, and the engines (in memory, out of core, Spark) that write the prepared folder."""
