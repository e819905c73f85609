"""dist_ctr: CTR and ranking models on TorchRec, from one process to a Ray cluster."""

__version__ = "0.1.0"
