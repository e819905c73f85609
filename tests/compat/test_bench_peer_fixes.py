"""The peer bench's ONN init diagnostic: only the second table of each pair module is re-drawn, at the std asked."""

from __future__ import annotations

import torch
from torch import nn

from dist_ctr.bench.peer import fix_peer_onn_init


class Interac(nn.Module):
    """DeepCTR-Torch's ONN pair module in shape: two tables, only the first started at ``init_std``."""

    def __init__(self) -> None:
        super().__init__()
        self.emb1 = nn.Embedding(500, 4)
        self.emb2 = nn.Embedding(600, 4)
        nn.init.normal_(self.emb1.weight, std=1e-4)


def test_fix_peer_onn_init_redraws_the_second_tables_only():
    torch.manual_seed(0)
    model = nn.ModuleDict({"a+b": Interac(), "a+c": Interac(), "other": nn.Embedding(700, 4)})
    first = {k: m.emb1.weight.detach().clone() for k, m in model.items() if isinstance(m, Interac)}
    other = model["other"].weight.detach().clone()
    assert all(float(m.emb2.weight.std()) > 0.5 for m in model.values() if isinstance(m, Interac))  # N(0, 1)
    assert fix_peer_onn_init(model, 1e-3) == 2
    for k, m in model.items():
        if isinstance(m, Interac):
            assert torch.equal(m.emb1.weight, first[k])
            assert 0.8e-3 < float(m.emb2.weight.std()) < 1.2e-3
    assert torch.equal(model["other"].weight, other)
