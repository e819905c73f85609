"""Embeddings on TorchRec: pooled bags, unpooled sequences, the linear (wide) part."""

from dist_ctr.sparse.arch import LinearArch, SparseArch, SparseOutput, materialize

__all__ = ["LinearArch", "SparseArch", "SparseOutput", "materialize"]
