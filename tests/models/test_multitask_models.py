"""Multi-task blocks against their formulas, and SharedBottom / ESMM / MMOE / PLE: task checks against the
schema, shapes, gradients, ESMM's CTCVR column, and learning two correlated tasks (click, click-and-convert)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.data.batch import CTRBatch
from dist_ctr.layers.core import DNN
from dist_ctr.layers.multitask import Gates, ParallelDNN, mix_experts
from dist_ctr.models import CTRModel, build_model
from dist_ctr.models.multitask import ctcvr_logit
from dist_ctr.schema import DenseFeat, FeatureSchema, LabelSpec, SparseFeat, VarLenSparseFeat
from dist_ctr.sparse import materialize
from dist_ctr.train.task import CTRTask
from tests.models.planted import auc, planted_two_tasks

MODELS = ["SharedBottom", "ESMM", "MMOE", "PLE"]
# MMOE / PLE towers are 32 wide: with DeepCTR-Torch's DNN init (weights N(0, 1e-4), biases U(+-1/sqrt(fan_in)))
# an 8-unit tower above near-constant expert mixtures loses every unit in this small run for 2 of 3 seeds (that
# task's AUC is 0.5); 32 units learn both tasks for seeds 0-2.
SMALL = {
    "SharedBottom": {"bottom_dnn_hidden_units": (32,), "tower_dnn_hidden_units": (8,)},
    "ESMM": {"tower_dnn_hidden_units": (32, 8)},
    "MMOE": {"num_experts": 3, "expert_dnn_hidden_units": (32,), "gate_dnn_hidden_units": (8,),
             "tower_dnn_hidden_units": (32,)},
    "PLE": {"shared_expert_num": 2, "specific_expert_num": 1, "num_levels": 2, "expert_dnn_hidden_units": (32,),
            "gate_dnn_hidden_units": (8,), "tower_dnn_hidden_units": (32,)},
}


# ---- blocks -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_bn", [False, True])
def test_parallel_dnn_equals_separate_dnns_with_copied_weights(use_bn):
    torch.manual_seed(0)
    K, N, hidden = 3, 5, (6, 4)
    par = ParallelDNN(N, K, hidden, "relu", use_bn=use_bn, init_std=0.5).train()
    refs = [DNN(N, hidden, "relu", use_bn=use_bn).train() for _ in range(K)]
    with torch.no_grad():
        for k, ref in enumerate(refs):
            lins = [m for m in ref.layers if isinstance(m, nn.Linear)]
            for i, lin in enumerate(lins):
                lin.weight.copy_(par.linears[i].weight[k].t())
                lin.bias.copy_(torch.randn(lin.bias.shape))
                par.linears[i].bias[k].copy_(lin.bias)
    x = torch.randn(7, N)
    out = par(x)
    assert out.shape == (7, K, 4)
    for k, ref in enumerate(refs):
        torch.testing.assert_close(out[:, k], ref(x))
    xk = torch.randn(7, K, N)  # a separate input per member
    outk = par(xk)
    for k, ref in enumerate(refs):
        torch.testing.assert_close(outk[:, k], ref(xk[:, k]))
    assert [tuple(w.shape) for w in par.weights()] == [(K, N, 6), (K, 6, 4)]


def test_parallel_dnn_init_matches_dnn_init():
    """Each member starts as a DeepCTR-Torch DNN does: weights N(0, init_std), biases nn.Linear's default
    U(-1/sqrt(N_in), 1/sqrt(N_in)) (not zeros: with weights at 1e-4 the biases are what ReLU sees at first)."""
    torch.manual_seed(0)
    par = ParallelDNN(300, 4, (200,), "relu", init_std=0.02)
    w, b = par.linears[0].weight, par.linears[0].bias
    assert float(w.std()) == pytest.approx(0.02, rel=0.05)
    bound = 300 ** -0.5
    assert float(b.abs().max()) <= bound
    assert float(b.std()) == pytest.approx(bound / 3 ** 0.5, rel=0.15)


def test_gates_and_mixture_formula():
    torch.manual_seed(1)
    gates = Gates(5, num_gates=2, num_experts=3, hidden_units=(4,), init_std=0.5)
    x = torch.randn(6, 5)
    g = gates(x)
    h = gates.dnn(x)  # (B, 2, 4)
    want = torch.softmax(torch.einsum("bgh,ghk->bgk", h, gates.final.weight), dim=-1)
    torch.testing.assert_close(g, want)
    torch.testing.assert_close(g.sum(-1), torch.ones(6, 2))
    e = torch.randn(6, 3, 7)
    mixed = mix_experts(g, e)
    torch.testing.assert_close(mixed[:, 1], (g[:, 1].unsqueeze(-1) * e).sum(1))
    assert Gates(5, 1, 4, ())(x).shape == (6, 1, 4)  # linear gate


def test_ctcvr_logit_is_exact_and_stable():
    a = torch.tensor([0.0, 2.0, -3.0, 60.0, -60.0, 60.0])
    b = torch.tensor([0.0, -1.0, 4.0, 60.0, 5.0, -60.0])
    z = ctcvr_logit(a, b)
    assert torch.isfinite(z).all()
    p = torch.sigmoid(a[:3].double()) * torch.sigmoid(b[:3].double())
    torch.testing.assert_close(z[:3].double(), torch.log(p) - torch.log1p(-p), rtol=1e-5, atol=1e-4)
    # Extremes, where p or 1 - p underflows: logit = -log(e^-a + e^-b + e^(-a-b)).
    torch.testing.assert_close(z[3:], torch.tensor([60.0 - float(np.log(2.0)), -60.0, -60.0]), rtol=0, atol=1e-2)
    a.requires_grad_(True)
    ctcvr_logit(a, b).sum().backward()
    assert torch.isfinite(a.grad).all()


# ---- models -----------------------------------------------------------------------------------------------------
def _schema(labels: tuple[LabelSpec, ...] = (LabelSpec("click"), LabelSpec("ctcvr"))) -> FeatureSchema:
    feats = (SparseFeat("a", 20, 8), SparseFeat("b", 20, 8), SparseFeat("c", 20, 8),
             VarLenSparseFeat(SparseFeat("tags", 10, 8), maxlen=3, combiner="mean"), DenseFeat("x0"), DenseFeat("x1"))
    return FeatureSchema(feats, labels)


def _model(name: str, schema: FeatureSchema, seed: int = 0, **overrides) -> CTRModel:
    torch.manual_seed(seed)
    return materialize(build_model(name, schema, {**SMALL[name], **overrides}), seed=seed)  # type: ignore


def _batch(schema: FeatureSchema, B: int, seed: int = 0) -> CTRBatch:
    g = torch.Generator().manual_seed(seed)
    vals, lens = [], []
    for f in schema.sparse_features:
        ln = torch.randint(0, 4, (B,), generator=g) if hasattr(f, "maxlen") else torch.ones(B, dtype=torch.long)
        lens.append(ln)
        vals.append(torch.randint(0, f.vocabulary_size, (int(ln.sum()),), generator=g))  # host sync
    kjt = KeyedJaggedTensor.from_lengths_sync(schema.sparse_names, torch.cat(vals), torch.cat(lens).to(torch.int32))
    T = len(schema.labels)
    labels = (torch.arange(B).unsqueeze(1) < torch.tensor([(3 * B) // 4, B // 4][:T] + [B // 2] * (T - 2))).float()
    return CTRBatch(torch.randn(B, schema.n_dense, generator=g), kjt, labels)


@pytest.mark.parametrize("name", MODELS)
def test_shapes_gradients_and_batch_of_one(name):
    s = _schema()
    model = _model(name, s).train()
    batch = _batch(s, 16)
    out = model(batch.dense, batch.sparse)
    assert out.shape == (16, 2) and torch.isfinite(out).all()
    model.pop_losses()
    loss, _ = CTRTask(model, s.task_types)(batch)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, f"no gradient reached {missing}"  # host sync above
    model.eval()
    one = _batch(s, 1, seed=3)
    with torch.no_grad():
        assert model(one.dense, one.sparse).shape == (1, 2)


@pytest.mark.parametrize("name", ["SharedBottom", "MMOE", "PLE"])
def test_three_tasks_with_a_regression_task(name):
    s = _schema((LabelSpec("click"), LabelSpec("buy"), LabelSpec("dwell", "regression")))
    model = _model(name, s, task_types=("binary", "binary", "regression"))
    batch = _batch(s, 8)
    out = model(batch.dense, batch.sparse)
    assert out.shape == (8, 3)
    assert not torch.equal(out[:, 0], out[:, 1])
    loss, _ = CTRTask(model, s.task_types)(batch)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("levels", [1, 3])
def test_ple_levels(levels):
    s = _schema()
    model = _model("PLE", s, num_levels=levels, specific_expert_num=2, shared_expert_num=1)
    assert len(model.levels) == levels
    assert (model.levels[-1].shared_gate is None) and all(lv.shared_gate is not None for lv in model.levels[:-1])
    b = _batch(s, 8)
    assert model(b.dense, b.sparse).shape == (8, 2)


def test_esmm_columns_are_ctr_and_ctcvr_logits():
    s = _schema()
    model = _model("ESMM", s).eval()
    with torch.no_grad():
        for p in model.out.parameters():
            p.copy_(torch.tensor([0.7, -1.3]))
        b = _batch(s, 8)
        ctr, cvr = model.tower_logits(b.dense, b.sparse)
        z = model(b.dense, b.sparse)
    torch.testing.assert_close(z[:, 0], ctr)
    torch.testing.assert_close(torch.sigmoid(z[:, 1]), torch.sigmoid(ctr) * torch.sigmoid(cvr))
    assert (torch.sigmoid(z[:, 1]) <= torch.sigmoid(z[:, 0])).all()
    assert CTRTask(model, s.task_types).output_kind == ("logit", "logit")


def test_task_config_is_checked_against_the_schema():
    s = _schema()
    with pytest.raises(ValueError, match=r"task_types \('binary', 'regression'\).*\['click', 'ctcvr'\]"):
        build_model("MMOE", s, {"task_types": ("binary", "regression")})
    with pytest.raises(ValueError, match=r"task_names \('ctr', 'ctcvr'\).*\('click', 'ctcvr'\)"):
        build_model("PLE", s, {"task_names": ("ctr", "ctcvr")})
    m = build_model("SharedBottom", s, {"task_names": ("click", "ctcvr"), "task_types": ("binary", "binary")})
    assert m.task_names == ("click", "ctcvr") and m.num_tasks == 2
    with pytest.raises(ValueError, match="at least 2 labels"):
        build_model("MMOE", _schema((LabelSpec("click"),)))
    with pytest.raises(ValueError, match="two binary labels"):
        build_model("ESMM", _schema((LabelSpec("click"), LabelSpec("gmv", "regression"))))
    with pytest.raises(ValueError, match="two binary labels"):
        build_model("ESMM", _schema((LabelSpec("l1"), LabelSpec("l2"), LabelSpec("l3"))))


# ---- learning two correlated tasks --------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _correlated():
    return planted_two_tasks(_schema(), n_train=6000, n_test=2000, batch_size=256, seed=0)


@pytest.mark.parametrize("name", MODELS)
def test_each_task_is_learnt(name):
    s, train, test = _correlated()
    model = _model(name, s)
    task = CTRTask(model, s.task_types)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(4):
        for b in train:
            loss, _ = task(b)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        probs = torch.cat([task.predict_proba(model(b.dense, b.sparse)) for b in test])
    labels = torch.cat([b.labels for b in test])
    aucs = [auc(probs[:, t], labels[:, t]) for t in range(2)]
    assert min(aucs) > 0.7, f"{name}: per-task AUC {aucs}"
