"""Training jobs: what a worker does with a task id (claim, fetch data, train, score, record)."""
