"""Model zoo. Every module in this package is imported here, so each model file registers itself.

``build_model(name, schema, config)`` builds one by name; ``MODEL_REGISTRY`` lists them.
"""

import importlib
import pkgutil

from dist_ctr.models.base import CTRModel
from dist_ctr.models.registry import MODEL_REGISTRY, ModelConfigError, build_model, make_config, register_model

for _m in pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_") and _m.name not in ("base", "registry"):
        _mod = importlib.import_module(f"{__name__}.{_m.name}")
        for _n in getattr(_mod, "__all__", []):
            globals()[_n] = getattr(_mod, _n)

__all__ = ["CTRModel", "MODEL_REGISTRY", "ModelConfigError", "build_model", "make_config", "register_model"]
__all__ += [e.cls.__name__ for e in MODEL_REGISTRY.values()]
