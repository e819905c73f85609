"""Pure torch layers (no devices, no processes). Every module's ``__all__`` is re-exported here."""

import importlib
import pkgutil

__all__: list[str] = []
for _m in pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_"):
        _mod = importlib.import_module(f"{__name__}.{_m.name}")
        for _n in getattr(_mod, "__all__", []):
            globals()[_n] = getattr(_mod, _n)
            __all__.append(_n)
