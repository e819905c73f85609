"""Schema presets: Criteo-shaped :class:`FeatureSchema` builders, by name.

Both presets have one binary ``label``, 13 dense count features ``I1..I13`` and 26 categorical features
``C1..C26`` (Criteo's column names and order).

- ``criteo-kaggle``: the Kaggle Display Advertising Challenge layout with small vocabularies (the real Kaggle
  cardinalities capped at 50,000) so that a demo trains in about a minute on a laptop.
- ``criteo-1tb``: the Criteo 1TB click logs layout with the MLPerf DLRM-DCNv2 cardinalities (the real ones capped
  at 40M rows), ``embedding_dim=128`` by default; ``capped=False`` gives the uncapped counts of TorchRec's DLRM
  example.
- ``criteo-1tb-multihot``: MLPerf DLRM-DCNv2's synthetic multi-hot layout: feature ``C_i`` is a bag of
  ``MLPERF_MULTIHOT_SIZES[i]`` ids (214 per row, sum-pooled) over the 40M-capped tables; ``scale`` /
  ``max_rows`` shrink the tables so that they fit a small machine.

Sources of the cardinalities (Criteo's own day files carry 32-bit hex tokens; these are the ids left after the
usual preprocessing, in ``C1..C26`` order):

- ``CRITEO_1TB_CARDINALITIES``: ``NUM_EMBEDDINGS_PER_FEATURE`` of TorchRec's DLRM example
  (``torchrec_dlrm/dlrm_main.py`` / ``torchrec/datasets/criteo.py`` defaults, 177,944,275 rows in all).
- ``CRITEO_1TB_MLPERF_CARDINALITIES``: the same counts capped at 40,000,000, as passed with
  ``--num_embeddings_per_feature`` in the MLPerf Training ``recommendation_v2/torchrec_dlrm`` reference
  (DLRM-DCNv2, 204,184,588 rows in all).
- ``CRITEO_KAGGLE_CARDINALITIES``: ``KAGGLE_NUM_EMBEDDINGS_PER_FEATURE`` found next to the former in TorchRec-based
  DLRM code (days 0-6 of Kaggle ``train.txt``, 33,762,577 rows in all).

>>> s = get_preset("criteo-kaggle")
>>> len(s.dense_names), len(s.sparse_names), s.label_names
(13, 26, ['label'])
>>> get_preset("criteo-1tb").feature("C1").vocabulary_size
40000000
>>> m = get_preset("criteo-1tb-multihot", max_rows=1000)
>>> m.feature("C21").maxlen, m.feature("C21").vocabulary_size, sum(MLPERF_MULTIHOT_SIZES)
(100, 1000, 214)
>>> criteo_1tb_schema(capped=False).feature("C20").vocabulary_size
48937457
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from dist_ctr.schema import DenseFeat, FeatureSchema, LabelSpec, SchemaError, SparseFeat, VarLenSparseFeat

__all__ = [
    "CRITEO_1TB_CARDINALITIES",
    "CRITEO_1TB_MLPERF_CARDINALITIES",
    "CRITEO_KAGGLE_CARDINALITIES",
    "CRITEO_KAGGLE_DEMO_CARDINALITIES",
    "DENSE_NAMES",
    "MLPERF_MULTIHOT_SIZES",
    "LABEL_NAME",
    "PRESETS",
    "SPARSE_NAMES",
    "criteo_1tb_multihot_schema",
    "criteo_1tb_schema",
    "criteo_kaggle_schema",
    "criteo_schema",
    "get_preset",
]

LABEL_NAME = "label"
DENSE_NAMES: tuple[str, ...] = tuple(f"I{i}" for i in range(1, 14))
SPARSE_NAMES: tuple[str, ...] = tuple(f"C{i}" for i in range(1, 27))

# TorchRec DLRM example, NUM_EMBEDDINGS_PER_FEATURE (Criteo 1TB, C1..C26).
CRITEO_1TB_CARDINALITIES: tuple[int, ...] = (
    45833188, 36746, 17245, 7413, 20243, 3, 7114, 1441, 62, 29275261, 1572176, 345138, 10,
    2209, 11267, 128, 4, 974, 14, 48937457, 11316796, 40094537, 452104, 12606, 104, 35,
)
# MLPerf Training DLRM-DCNv2 reference (Criteo 1TB, capped at 40M rows per table).
CRITEO_1TB_MLPERF_CARDINALITIES: tuple[int, ...] = (
    40000000, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 40000000, 3067956, 405282, 10,
    2209, 11938, 155, 4, 976, 14, 40000000, 40000000, 40000000, 590152, 12973, 108, 36,
)
# MLPerf Training DLRM-DCNv2 multi-hot bag sizes (``--multi_hot_sizes`` of the reference, C1..C26; 214 ids/row).
MLPERF_MULTIHOT_SIZES: tuple[int, ...] = (
    3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1,
)
# Kaggle Display Advertising Challenge (days 0-6), KAGGLE_NUM_EMBEDDINGS_PER_FEATURE.
CRITEO_KAGGLE_CARDINALITIES: tuple[int, ...] = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)
DEMO_VOCAB_CAP = 50_000
# The Kaggle cardinalities capped at 50k: ~0.5M embedding rows in all (a one-minute demo at dim 16).
CRITEO_KAGGLE_DEMO_CARDINALITIES: tuple[int, ...] = tuple(min(c, DEMO_VOCAB_CAP) for c in CRITEO_KAGGLE_CARDINALITIES)


def criteo_schema(vocab_sizes: Sequence[int], embedding_dim: int = 16, use_hash: bool = False,
                  label: str = LABEL_NAME) -> FeatureSchema:
    """``label`` + ``I1..I13`` (:class:`DenseFeat`) + ``C1..C26`` (:class:`SparseFeat`) with the given vocabularies.

    Args:
        vocab_sizes (Sequence[int]): 26 vocabulary sizes, ``C1..C26`` order.
        embedding_dim (int): every table's dim ``D``.
        use_hash (bool): categoricals are raw values (e.g. Criteo's 8-char hex) hashed modulo the vocabulary.
        label (str): name of the binary label column.

    Returns:
        FeatureSchema: 13 dense, 26 sparse features, one binary label.
    """
    vocab = list(vocab_sizes)
    if len(vocab) != len(SPARSE_NAMES):
        raise SchemaError(f"Criteo schema needs {len(SPARSE_NAMES)} vocabulary sizes (C1..C26), got {len(vocab)}")
    feats: list[Any] = [DenseFeat(n) for n in DENSE_NAMES]
    feats += [SparseFeat(n, int(v), embedding_dim, use_hash=use_hash, dtype="string" if use_hash else "int64")
              for n, v in zip(SPARSE_NAMES, vocab)]
    return FeatureSchema(tuple(feats), (LabelSpec(label),))


def criteo_kaggle_schema(embedding_dim: int = 16, vocab_sizes: Sequence[int] | None = None,
                         use_hash: bool = False) -> FeatureSchema:
    """Criteo Kaggle layout; default vocabularies :data:`CRITEO_KAGGLE_DEMO_CARDINALITIES` (3 .. 50,000)."""
    return criteo_schema(CRITEO_KAGGLE_DEMO_CARDINALITIES if vocab_sizes is None else vocab_sizes,
                         embedding_dim=embedding_dim, use_hash=use_hash)


def criteo_1tb_schema(embedding_dim: int = 128, capped: bool = True, use_hash: bool = False,
                      vocab_sizes: Sequence[int] | None = None) -> FeatureSchema:
    """Criteo 1TB layout; MLPerf's 40M-capped cardinalities (``capped=True``) or TorchRec's uncapped ones."""
    if vocab_sizes is None:
        vocab_sizes = CRITEO_1TB_MLPERF_CARDINALITIES if capped else CRITEO_1TB_CARDINALITIES
    return criteo_schema(vocab_sizes, embedding_dim=embedding_dim, use_hash=use_hash)


def criteo_1tb_multihot_schema(embedding_dim: int = 128, scale: float = 1.0, max_rows: int | None = None,
                               use_hash: bool = False) -> FeatureSchema:
    """MLPerf multi-hot Criteo 1TB: ``C_i`` is a sum-pooled bag of ``MLPERF_MULTIHOT_SIZES[i]`` ids.

    Args:
        embedding_dim (int): every table's dim ``D`` (MLPerf: 128).
        scale (float): each 40M-capped MLPerf cardinality is multiplied by ``scale`` (at least 1 row).
        max_rows (int | None): then capped at ``max_rows`` rows per table.
        use_hash (bool): ids are raw values hashed modulo the table size.

    Returns:
        FeatureSchema: 13 dense features, 26 bags (a bag of one is a :class:`SparseFeat`), one binary label.
    """
    if not scale > 0:
        raise SchemaError(f"criteo-1tb-multihot: scale must be > 0, got {scale!r}")
    if max_rows is not None and max_rows < 1:
        raise SchemaError(f"criteo-1tb-multihot: max_rows must be >= 1, got {max_rows!r}")
    feats: list[Any] = [DenseFeat(n) for n in DENSE_NAMES]
    for name, card, bag in zip(SPARSE_NAMES, CRITEO_1TB_MLPERF_CARDINALITIES, MLPERF_MULTIHOT_SIZES):
        rows = max(1, int(card * scale))
        rows = rows if max_rows is None else min(rows, max_rows)
        sf = SparseFeat(name, rows, embedding_dim, use_hash=use_hash, dtype="string" if use_hash else "int64")
        feats.append(sf if bag == 1 else VarLenSparseFeat(sf, maxlen=bag, combiner="sum"))
    return FeatureSchema(tuple(feats), (LabelSpec(LABEL_NAME),))


PRESETS: dict[str, Callable[..., FeatureSchema]] = {
    "criteo-kaggle": criteo_kaggle_schema,
    "criteo-1tb": criteo_1tb_schema,
    "criteo-1tb-multihot": criteo_1tb_multihot_schema,
}


def get_preset(name: str, **kwargs: Any) -> FeatureSchema:
    """Build a preset schema by name (``criteo-kaggle``, ``criteo-1tb``); ``kwargs`` go to its builder."""
    key = name.strip().lower().replace("_", "-")
    if key not in PRESETS:
        raise SchemaError(f"unknown schema preset {name!r}; known presets: {sorted(PRESETS)}")
    try:
        return PRESETS[key](**kwargs)
    except TypeError as e:
        raise SchemaError(f"schema preset {name!r}: {e}") from None
