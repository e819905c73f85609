"""The peer bench's diagnostics: ONN's second pair tables re-drawn at the std asked, MLR's learners read from its
base models."""

from __future__ import annotations

import torch
from torch import nn

from dist_ctr.bench.peer import fix_peer_mlr_learners, fix_peer_onn_init


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


class _PeerMLRShape(nn.Module):
    """DeepCTR-Torch's MLR in shape: region and base linear models, learner scores from the region models."""

    def __init__(self) -> None:
        super().__init__()
        self.region_linear_model = nn.ModuleList([nn.Linear(3, 1) for _ in range(2)])
        self.base_linear_model = nn.ModuleList([nn.Linear(3, 1) for _ in range(2)])
        self.prediction_layer = nn.Sigmoid()

    def get_learner_score(self, inputs: torch.Tensor, region_number: int) -> torch.Tensor:
        return self.prediction_layer(torch.cat([self.region_linear_model[i](inputs) for i in range(region_number)],
                                               dim=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.get_learner_score(x, 2)


def test_fix_peer_mlr_learners_scores_with_the_base_models():
    torch.manual_seed(0)
    model = _PeerMLRShape()
    x = torch.randn(5, 3)
    region = torch.sigmoid(torch.cat([m(x) for m in model.region_linear_model], dim=-1))
    base = torch.sigmoid(torch.cat([m(x) for m in model.base_linear_model], dim=-1))
    torch.testing.assert_close(model(x), region)
    fix_peer_mlr_learners(model)
    torch.testing.assert_close(model(x), base)
    model(x).sum().backward()
    assert all(m.weight.grad is not None for m in model.base_linear_model)
