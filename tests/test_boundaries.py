"""Rooms keep to their boundaries (docs/architecture.md): a room's modules never import what it must not."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "dist_ctr"

FORBIDDEN = {
    "schema": ["dist_ctr.data", "dist_ctr.models", "dist_ctr.train", "ray", "torch.distributed"],
    "data": ["dist_ctr.models", "dist_ctr.train", "dist_ctr.distributed", "ray"],
    "sparse": ["torch.distributed", "torchrec.distributed", "ray", "fsspec"],
    "layers": ["torch.distributed", "torchrec.distributed", "ray", "fsspec"],
    "models": ["torch.distributed", "torchrec.distributed", "ray", "fsspec"],
    "train": ["ray"],
    "compat": ["ray"],
    "distributed": ["ray"],
    "pipeline": ["ray"],
    "launch": ["dist_ctr.models", "dist_ctr.layers"],
}
RAY_TRAIN_ONLY_IN = "launch"


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


def _files():
    return sorted(p for p in ROOT.rglob("*.py"))


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_room_boundaries(room):
    bad = []
    for f in (ROOT / room).rglob("*.py"):
        for mod in _imports(f):
            for forbidden in FORBIDDEN[room]:
                if mod == forbidden or mod.startswith(forbidden + "."):
                    bad.append(f"{f.relative_to(ROOT.parent)} imports {mod}")
    assert not bad, "\n".join(bad)


def test_only_launch_imports_ray_train():
    bad = []
    for f in _files():
        if f.relative_to(ROOT).parts[0] == RAY_TRAIN_ONLY_IN:
            continue
        for mod in _imports(f):
            if mod == "ray.train" or mod.startswith("ray.train."):
                bad.append(f"{f.relative_to(ROOT.parent)} imports {mod}")
    assert not bad, "\n".join(bad)
