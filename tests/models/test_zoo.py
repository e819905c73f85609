"""One parametrised suite over EVERY registered model (``MODEL_REGISTRY``), plus checks of the first five models.

Contract for model authors (how a model added later is covered automatically):

- The model is built with ``build_model(name, schema, config)`` on the tiny schema of ``conftest.py`` (features
  ``user``, ``item``, ``prev_item`` (shares the ``item`` table), multi-hot ``tags``, ``hist_item`` (var-len on the
  ``item`` table), dense ``x`` and ``y``; all embedding dims 4) and materialised with
  ``dist_ctr.sparse.materialize(model, seed=...)``.
- ``config`` is the config class's defaults, unless the class defines a classmethod
  ``example_config(schema: FeatureSchema) -> ConfigDataclass`` (for models whose defaults cannot fit an unknown
  schema, e.g. a sequence model naming ``hist_item`` as its behaviour sequence and ``item`` as the target).
- A class attribute ``schema_requirements`` (an iterable of strings; default empty) declares what the model
  cannot do without. Known values:

  * ``"sparse"``: needs at least one sparse feature -> the ``no_sparse`` variant is skipped;
  * ``"dense"``: needs at least one dense feature -> the ``no_dense`` variant is skipped;
  * ``"sequence"``: reads ``hist_item`` as a sequence -> implies ``"sparse"``;
  * ``"multitask"``: needs several labels -> every test uses the schema with labels ``label``, ``label2``.

  An unknown value fails the test (a typo must not silently skip coverage). Skips say which requirement caused
  them.
- The model returns logits ``(B, T)`` with ``T = model.num_tasks``; the loss is ``CTRTask``'s (so models whose
  columns are probabilities, declared by ``output_kind``, are handled), which includes ``pop_losses()``.
"""

from __future__ import annotations

import io
from typing import Any, Callable

import pytest
import torch

from dist_ctr.data.batch import CTRBatch
from dist_ctr.models import MODEL_REGISTRY, CTRModel, build_model
from dist_ctr.schema import DenseFeat, FeatureSchema, SparseFeat
from dist_ctr.sparse import materialize
from dist_ctr.train.task import CTRTask

KNOWN_REQUIREMENTS = {"sparse", "dense", "sequence", "multitask"}
ALL_MODELS = sorted(MODEL_REGISTRY)
FIRST_MODELS = ["WDL", "DeepFM", "DCN", "DCNMix", "xDeepFM"]


# ---- helpers ------------------------------------------------------------------------------------------------
def _requirements(name: str) -> set[str]:
    reqs = set(getattr(MODEL_REGISTRY[name].cls, "schema_requirements", ()))
    unknown = reqs - KNOWN_REQUIREMENTS
    if unknown:
        pytest.fail(f"{name}.schema_requirements has unknown value(s) {sorted(unknown)}; known: "
                    f"{sorted(KNOWN_REQUIREMENTS)}")
    return reqs


def _schema(name: str, schema_factory: Callable[..., FeatureSchema], variant: str = "base") -> FeatureSchema:
    reqs = _requirements(name)
    if variant == "no_sparse" and reqs & {"sparse", "sequence"}:
        pytest.skip(f"{name} declares schema_requirements {sorted(reqs)}: needs sparse features")
    if variant == "no_dense" and "dense" in reqs:
        pytest.skip(f"{name} declares schema_requirements {sorted(reqs)}: needs dense features")
    return schema_factory(variant, num_labels=2 if "multitask" in reqs else 1)


def _config(name: str, schema: FeatureSchema) -> Any:
    hook = getattr(MODEL_REGISTRY[name].cls, "example_config", None)
    return hook(schema) if hook is not None else None


def _model(name: str, schema: FeatureSchema, model_factory: Callable[..., CTRModel], seed: int = 0) -> CTRModel:
    return model_factory(name, schema, _config(name, schema), seed)


def _loss(model: CTRModel, schema: FeatureSchema, batch: CTRBatch) -> torch.Tensor:
    loss, _ = CTRTask(model, schema.task_types)(batch)
    return loss


class GradientMissing(AssertionError):
    def __init__(self, names: list[str]) -> None:
        super().__init__(f"no gradient reached {names}")
        self.names = set(names)


def _assert_every_parameter_has_gradient(model: CTRModel) -> None:
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not bool(p.grad.abs().sum() > 0))]  # host sync
    if missing:
        raise GradientMissing(missing)


def _check_forward_backward(name: str, schema: FeatureSchema, model: CTRModel, batch: CTRBatch) -> None:
    # Unbalanced labels: with balanced ones, a model whose initial logits are ~1e-9 (DeepCTR's init_std=1e-4)
    # gets an output-bias gradient of exactly 0 in float32, which says nothing about the model.
    B = batch.batch_size
    labels = (torch.arange(B) < (3 * B + 3) // 4).float().unsqueeze(1).expand(B, batch.labels.shape[1])
    batch = CTRBatch(batch.dense, batch.sparse, labels.contiguous())
    model.train()
    out = model(batch.dense, batch.sparse)
    assert out.shape == (batch.batch_size, model.num_tasks), f"{name}: output {tuple(out.shape)}"
    assert model.num_tasks == max(1, len(schema.labels))
    assert torch.isfinite(out).all()
    model.pop_losses()
    model.zero_grad()
    loss = _loss(model, schema, batch)
    assert torch.isfinite(loss)
    loss.backward()
    _assert_every_parameter_has_gradient(model)


# ---- every registered model ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_shape_and_gradient_on_every_parameter(name, schema_factory, model_factory, batch_builder):
    """Wiring: every parameter gets a nonzero gradient from some initialisation.

    One init can leave a parameter without gradient by chance: FiBiNET's SENET squeeze on this 5-field schema has
    one hidden unit, and when the signs drawn for its excitation weights zero four of the five fields through the
    final ReLU, every bilinear product (and so every gradient into the squeeze) is 0. So each parameter must get a
    gradient under at least one of three init seeds; a parameter cut off from the loss never does.
    """
    schema = _schema(name, schema_factory)
    batch = batch_builder(schema, 8, seed=1, mode="full")
    missing: set[str] | None = None
    for seed in range(3):
        model = _model(name, schema, model_factory, seed)
        try:
            _check_forward_backward(name, schema, model, batch)
            return
        except GradientMissing as e:
            missing = e.names if missing is None else missing & e.names
            if not missing:
                return
    raise AssertionError(f"no gradient reached {sorted(missing or ())} under init seeds 0, 1, 2")


@pytest.mark.parametrize("name", ALL_MODELS)
def test_random_bags_give_finite_outputs(name, schema_factory, model_factory, batch_builder):
    schema = _schema(name, schema_factory)
    model = _model(name, schema, model_factory)
    batch = batch_builder(schema, 4, seed=2, mode="random")
    out = model(batch.dense, batch.sparse)
    assert out.shape == (4, model.num_tasks)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_batch_of_one_in_eval_mode(name, schema_factory, model_factory, batch_builder):
    schema = _schema(name, schema_factory)
    model = _model(name, schema, model_factory).eval()
    batch = batch_builder(schema, 1, seed=3, mode="full")
    with torch.no_grad():
        out = model(batch.dense, batch.sparse)
    assert out.shape == (1, model.num_tasks)
    assert torch.isfinite(out).all()
    # The single row gives the same logits as inside a larger batch (no cross-row leakage in eval).
    big = batch_builder(schema, 3, seed=3, mode="full")
    with torch.no_grad():
        rows = model(big.dense, big.sparse)
        first = model(big.dense[:1], _first_row(big))
    torch.testing.assert_close(first, rows[:1], rtol=1e-5, atol=1e-6)


def _first_row(batch: CTRBatch):
    """The KJT of row 0 of ``batch``."""
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    kjt = batch.sparse
    if not kjt.keys():
        return KeyedJaggedTensor(keys=[], values=kjt.values(), lengths=kjt.lengths(), stride=1)
    vals, lens = [], []
    for k in kjt.keys():
        jt = kjt[k]
        n = int(jt.lengths()[0])  # host sync
        vals.append(jt.values()[:n])
        lens.append(jt.lengths()[:1])
    return KeyedJaggedTensor.from_lengths_sync(kjt.keys(), torch.cat(vals), torch.cat(lens).to(torch.int32))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_empty_bags(name, schema_factory, model_factory, batch_builder):
    schema = _schema(name, schema_factory)
    model = _model(name, schema, model_factory)
    batch = batch_builder(schema, 4, seed=4, mode="empty")
    out = model(batch.dense, batch.sparse)
    assert out.shape == (4, model.num_tasks)
    assert torch.isfinite(out).all()
    model.pop_losses()
    loss = _loss(model, schema, batch)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_state_dict_round_trip_gives_identical_predictions(name, schema_factory, model_factory, batch_builder):
    schema = _schema(name, schema_factory)
    a = _model(name, schema, model_factory, seed=0).eval()
    b = _model(name, schema, model_factory, seed=1).eval()
    batch = batch_builder(schema, 4, seed=5, mode="random")
    with torch.no_grad():
        pa, pb = a(batch.dense, batch.sparse), b(batch.dense, batch.sparse)
    assert not torch.equal(pa, pb), "differently seeded models should differ before loading"
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b.load_state_dict(torch.load(buf))
    with torch.no_grad():
        assert torch.equal(b(batch.dense, batch.sparse), pa)


@pytest.mark.parametrize("variant", ["no_dense", "no_sparse"])
@pytest.mark.parametrize("name", ALL_MODELS)
def test_schema_variants(name, variant, schema_factory, model_factory, batch_builder):
    schema = _schema(name, schema_factory, variant)
    model = _model(name, schema, model_factory)
    _check_forward_backward(name, schema, model, batch_builder(schema, 8, seed=6, mode="full"))


# ---- the first five models ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FIRST_MODELS)
def test_two_labels_give_two_output_columns(name, schema_factory, model_factory, batch_builder):
    schema = schema_factory("base", num_labels=2)
    model = model_factory(name, schema, None, 0)
    batch = batch_builder(schema, 4, seed=7, mode="full")
    out = model(batch.dense, batch.sparse)
    assert out.shape == (4, 2)
    assert not torch.equal(out[:, 0], out[:, 1])  # one output weight column per task


VARIANT_CONFIGS = [
    ("WDL", {"dnn_hidden_units": ()}),  # linear part only
    ("WDL", {"dnn_use_bn": True, "dnn_dropout": 0.5, "dnn_activation": "prelu"}),
    ("DeepFM", {"use_fm": False}),
    ("DeepFM", {"dnn_hidden_units": ()}),  # FM + linear
    ("DeepFM", {"dnn_feature_names": ("user", "tags", "x"), "linear_feature_names": ("item", "y")}),
    ("DCN", {"cross_parameterization": "matrix", "cross_num": 3}),
    ("DCN", {"dnn_hidden_units": ()}),  # cross only
    ("DCN", {"cross_num": 0}),  # deep only
    ("DCNMix", {"low_rank": 2, "num_experts": 3, "cross_num": 1}),
    ("xDeepFM", {"cin_split_half": False, "cin_layer_size": (6, 5), "cin_activation": "linear"}),
    ("xDeepFM", {"dnn_hidden_units": (), "cin_layer_size": (8, 8, 3)}),
]


@pytest.mark.parametrize(("name", "config"), VARIANT_CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(VARIANT_CONFIGS)])
def test_config_variants(name, config, tiny_schema, model_factory, batch_builder):
    model = model_factory(name, tiny_schema, config, 0)
    _check_forward_backward(name, tiny_schema, model, batch_builder(tiny_schema, 8, seed=8, mode="full"))


def test_feature_selection_is_respected(tiny_schema):
    m = build_model("DeepFM", tiny_schema, {"dnn_feature_names": ("user", "tags", "x"),
                                            "linear_feature_names": ("item", "y")})
    assert m.inputs.sparse_names == ["user", "tags"] and m.inputs.dense_dim == 1
    assert m.inputs.output_dim == 1 + 2 * 4
    assert [c.name for c in m.linear.ebc.embedding_bag_configs()] == ["linear__item"]


@pytest.mark.parametrize("name", ["DeepFM", "xDeepFM"])
def test_unequal_embedding_dims_are_rejected_by_name(name):
    schema = FeatureSchema((SparseFeat("a", 5, 4), SparseFeat("wide", 5, 8), DenseFeat("x")))
    with pytest.raises(ValueError, match=r"embedding_dim.*'a': 4.*'wide': 8"):
        build_model(name, schema)


@pytest.mark.parametrize("name", ["WDL", "DCN", "DCNMix"])
def test_unequal_embedding_dims_are_fine_without_fm_or_cin(name, model_factory, batch_builder):
    schema = FeatureSchema((SparseFeat("a", 5, 4), SparseFeat("wide", 5, 8), DenseFeat("x")))
    model = model_factory(name, schema, {"dnn_hidden_units": (8,)}, 0)
    assert model.inputs.output_dim == 1 + 4 + 8
    _check_forward_backward(name, schema, model, batch_builder(schema, 4, seed=9, mode="full"))


@pytest.mark.parametrize("name", FIRST_MODELS)
@pytest.mark.parametrize("key", ["dnn_feature_names", "linear_feature_names"])
def test_unknown_feature_name_is_an_error_naming_it(name, key, tiny_schema):
    with pytest.raises(ValueError, match=rf"{key}.*'no_such_column'"):
        build_model(name, tiny_schema, {key: ("user", "no_such_column")})


def test_dcn_without_any_tower_is_an_error(tiny_schema):
    with pytest.raises(Exception, match="either dnn_hidden_units or cross_num"):
        build_model("DCN", tiny_schema, {"cross_num": 0, "dnn_hidden_units": ()})


def test_l2_terms_follow_deepctr_arguments(tiny_schema, batch_builder):
    """DCN: dense L2 = l2_reg_cross |kernels|^2 + l2_reg_dnn (|W_dnn|^2 + |w_out|^2) + l2_reg_linear |w_dense|^2;
    embedding L2 = l2_reg_embedding * sum(e^2) / B over the looked-up DNN embeddings."""
    cfg = {"l2_reg_cross": 0.1, "l2_reg_dnn": 0.01, "l2_reg_linear": 0.2, "l2_reg_embedding": 0.3,
           "dnn_hidden_units": (8,)}
    model = materialize(build_model("DCN", tiny_schema, cfg), seed=0).train()
    batch = batch_builder(tiny_schema, 4, seed=10, mode="full")
    model(batch.dense, batch.sparse)
    losses = model.pop_losses()
    sq = lambda ts: sum(float(t.pow(2).sum()) for t in ts)  # noqa: E731  # host sync
    want_dense = (0.1 * sq([model.crossnet.kernels]) + 0.01 * sq(model.dnn.weights() + [model.dnn_linear.weight])
                  + 0.2 * sq([model.linear.dense_weight.weight]))
    assert float(losses["l2_dense"]) == pytest.approx(want_dense, rel=1e-5)  # host sync
    emb = model.inputs.sparse(batch.sparse).pooled_flat
    assert float(losses["l2_embedding"]) == pytest.approx(0.3 * float(emb.pow(2).sum()) / 4, rel=1e-5)  # host sync
    model.eval()
    model(batch.dense, batch.sparse)
    assert model.pop_losses() == {}
