"""Running the pipeline's real services (Dagster, PostgreSQL) in subprocesses for tests and benchmarks."""
