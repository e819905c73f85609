"""Synthetic CTR data with a planted, known signal, written as Parquet shards to any fsspec URL.

Notation: ``N`` rows, ``T`` tasks (label columns), ``r`` rank of each pairwise effect, ``V`` a feature's vocabulary.

Every row's true logit for task 0 is

    z = b + sum_f w_f(id_f) + sum_{(f, g) in pairs} s_fg * <u_f(id_f), v_g(id_g)> + sum_d c_d * (log1p(x_d) - m_d) / s_d
          + beta * (share of the history in the target's category - its mean)   [with a linked behaviour sequence]

and the label is ``Bernoulli(sigmoid(z))``. All weights are deterministic hashes of ``(model_seed, feature, id)``
(``splitmix64``), tabulated for vocabularies up to 1M and hashed on the fly above, so a 40M-row Criteo-1TB feature
needs no giant table. The pair vectors ``u, v`` are centred under the id distribution, so each pairwise effect
averages to zero over the partner feature: a first-order (additive) model cannot see it, a model with feature
interactions can. ``b`` is calibrated to the target positive rate on a fixed calibration sample. The model depends
only on the schema, ``model_seed`` and :class:`PlantedSignal`, never on ``seed``, so a train and an eval set drawn
with different seeds share it.

- Ids: Zipf-like (continuous power law of exponent ``1.05 .. 1.3`` per feature, sampled through a 65,536-bucket
  interpolated inverse CDF), mapped through a per-feature affine permutation so popular ids are spread out.
- Dense ``I``-like columns: non-negative heavy-tailed integers (int32) with per-column null rates.
- Multi-task: task ``t > 0`` has ``z_t = b_t + 0.8 z_shared + own first-order effects``: correlated labels.
- Sequences: a ``VarLenSparseFeat`` sharing its table with a ``SparseFeat`` (``hist_item_id`` -> ``item_id``) is a
  behaviour history: each row has an interest category, history items come mostly from it, the target item half of
  the time, and the history/target match moves the logit.
- ``raw_hex``: ``use_hash`` categoricals are written as Criteo-style 8-char hex tokens (``stable_hash`` maps them
  to ids when read).

The report gives the generator's Bayes AUC (exact rank AUC of the true probabilities against the drawn labels on
the generated rows) and the AUC of the additive part of the truth (``first_order_auc``), so benchmarks know the
ceiling and how much of it needs interactions.

In memory, :func:`synth_table` gives an Arrow table and :func:`draw_arrays` the same rows read by the loader's
transform: column arrays, true logits, Bayes AUC and ``CTRBatch`` es (what tests and benchmarks train on).

>>> from dist_ctr.schema import DenseFeat, FeatureSchema, SparseFeat
>>> s = FeatureSchema((DenseFeat("I1"), SparseFeat("C1", 100, 4), SparseFeat("C2", 50, 4)))
>>> t = synth_table(s, 1000, seed=1)
>>> t.table.column_names
['row_id', 'label', 'I1', 'C1', 'C2']
>>> t.probs.shape, bool(0.15 < t.table.column("label").to_numpy().mean() < 0.35)
((1, 1000), True)
>>> exact_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
0.75
"""

from dist_ctr.auc import exact_auc
from dist_ctr.data.synthetic.arrays import PlantedArrays, draw_arrays, history_categories
from dist_ctr.data.synthetic.ids import TABLE_MAX, _hash_unit, _hex8, _salt, _sigmoid, _u32, _unit, _Zipf
from dist_ctr.data.synthetic.model import ROW_ID, PlantedModel
from dist_ctr.data.synthetic.signal import PlantedSignal
from dist_ctr.data.synthetic.table import SynthTable, synth_table, with_options
from dist_ctr.data.synthetic.write import (
    DICT_MAX_VOCAB,
    INFO_FILE,
    SCHEMA_FILE,
    SynthReport,
    _encode,
    generate,
)

__all__ = [
    "PlantedArrays",
    "PlantedModel",
    "PlantedSignal",
    "SynthReport",
    "SynthTable",
    "draw_arrays",
    "exact_auc",
    "generate",
    "history_categories",
    "synth_table",
    "with_options",
]
