"""The engines that prepare a log larger than memory: out of core (polars, partitioned on disk) and Spark.
Each writes the same prepared folder as the in-memory path."""
