"""Data: Parquet sources on fsspec, assignment, transforms, CTRBatch, resumable loader, synthetic data."""
