"""Scheduled retraining: partitions, windows, warm start, eval gate, model registry, publish / rollback."""
