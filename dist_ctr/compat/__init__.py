"""DeepCTR-Torch-compatible facade: replace the prefix ``deepctr_torch`` with ``dist_ctr.compat``.

- :mod:`dist_ctr.compat.inputs`: ``SparseFeat``, ``DenseFeat``, ``VarLenSparseFeat``, ``get_feature_names``;
- :mod:`dist_ctr.compat.models`: every registered model under its DeepCTR class name (``DeepFM``, ``DCNMix``,
  ``DIN``, ``MMOE``, ...), with ``compile`` / ``fit`` / ``evaluate`` / ``predict``;
- :mod:`dist_ctr.compat.callbacks`: ``EarlyStopping``, ``ModelCheckpoint``, ``History``.

Underneath is the engine every job uses (``CTRTask`` + ``Trainer`` through DistributedModelParallel with fused
embedding optimizers); :mod:`dist_ctr.compat.base` lists where behaviour differs from DeepCTR-Torch and why.
"""

from dist_ctr.compat import callbacks, inputs, models

__all__ = ["callbacks", "inputs", "models"]
