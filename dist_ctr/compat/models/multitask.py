"""DeepCTR-Torch's ``deepctr_torch.models.multitask``: the multi-task compat classes that are registered.

>>> import dist_ctr.compat.models as m
>>> all(getattr(m, n) is globals()[n] for n in __all__)
True
"""

from __future__ import annotations

import dist_ctr.compat.models as _models

__all__ = [n for n in ("SharedBottom", "ESMM", "MMOE", "PLE") if n in _models.__all__]
globals().update({n: getattr(_models, n) for n in __all__})
