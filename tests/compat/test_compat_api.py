"""The DeepCTR-compatible facade: constructors, compile / fit / evaluate / predict, callbacks, input errors.

Data are small seeded dicts with a planted signal (a first-order effect of one sparse feature, a dense slope and,
for the var-len test, the presence of one id in a padded history), so learning is asserted, not just running.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import torch
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from dist_ctr.compat.callbacks import EarlyStopping, History, ModelCheckpoint
from dist_ctr.compat.data import prepare
from dist_ctr.compat.inputs import DenseFeat, SparseFeat, VarLenSparseFeat, get_feature_names
from dist_ctr.models import MODEL_REGISTRY
from dist_ctr.schema import FeatureSchema, LabelSpec

DeepFM = pytest.importorskip("dist_ctr.compat.models").__dict__.get("DeepFM")
if DeepFM is None:  # only while the DeepFM helper has not registered it yet
    pytest.skip("DeepFM is not registered in dist_ctr.models yet", allow_module_level=True)

import dist_ctr.compat.models as cm  # noqa: E402


def planted(n: int, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray, list]:
    """``y ~ Bernoulli(sigmoid(2 * (+-1 by parity of a) + 1.5 * x1))``; ``b`` is noise."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 20, n)
    b = rng.integers(0, 10, n)
    x1 = rng.normal(size=n).astype(np.float32)
    logit = 2.0 * ((a % 2) * 2 - 1) + 1.5 * x1
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    cols = [SparseFeat("a", 20, 4), SparseFeat("b", 10, 4), DenseFeat("x1", 1)]
    return {"a": a, "b": b, "x1": x1}, y, cols


def small_deepfm(cols, **kw):
    return DeepFM(cols, cols, dnn_hidden_units=(16,), seed=1, **kw)


# ---- fit / evaluate / predict ------------------------------------------------------------------------------
def test_fit_learns_history_keys_and_exact_metrics():
    x, y, cols = planted(3000)
    xt, yt, _ = planted(1000, seed=1)
    m = small_deepfm(cols)
    m.compile("adagrad", "binary_crossentropy", metrics=["binary_crossentropy", "auc", "accuracy"])
    h = m.fit(x, y, batch_size=256, epochs=3, verbose=0, validation_split=0.2)
    assert isinstance(h, History) and h is m.history and h.epoch == [0, 1, 2]
    assert set(h.history) == {"loss", "binary_crossentropy", "auc", "accuracy",
                              "val_binary_crossentropy", "val_auc", "val_accuracy"}
    assert all(len(v) == 3 for v in h.history.values())
    assert h.history["loss"][-1] < h.history["loss"][0]
    assert h.history["val_auc"][-1] > 0.8  # the planted signal is found (Bayes AUC ~0.9)

    p = m.predict(xt, batch_size=128)
    assert p.shape == (1000, 1) and p.dtype == np.float64 and ((p > 0) & (p < 1)).all()
    ev = m.evaluate(xt, yt, batch_size=100)
    assert set(ev) == {"binary_crossentropy", "auc", "accuracy"}
    assert ev["auc"] == pytest.approx(roc_auc_score(yt, p[:, 0]), abs=1e-6)  # exact, whole-set metrics
    assert ev["binary_crossentropy"] == pytest.approx(log_loss(yt, p[:, 0]), abs=1e-5)
    assert ev["accuracy"] == pytest.approx(float(((p[:, 0] > 0.5) == yt).mean()))
    assert ev["auc"] > 0.8


def test_loss_is_summed_over_the_batch_as_deepctr_torch():
    """DeepCTR-Torch sums the loss over the batch, so ``compile("sgd")`` at its lr 0.01 takes steps B times larger
    than on the per-row mean: the facade does the same by default, and ``loss_reduction="mean"`` opts out. With
    the sum, three SGD epochs find the planted signal (held-out AUC 0.84); with the mean at the same lr the loss
    barely moves (0.69 -> 0.68, AUC 0.72)."""
    x, y, cols = planted(3000)
    xt, yt, _ = planted(1000, seed=1)
    aucs, losses = {}, {}
    for reduction in ("sum", "mean"):
        m = small_deepfm(cols)
        m.compile("sgd", "binary_crossentropy", metrics=["auc"], loss_reduction=reduction)
        assert m.trainer is not None and m.trainer.task.reduction == reduction
        h = m.fit(x, y, batch_size=256, epochs=3, verbose=0)
        losses[reduction] = h.history["loss"][-1]  # per-row either way
        aucs[reduction] = roc_auc_score(yt, m.predict(xt, batch_size=256)[:, 0])
    assert aucs["sum"] > 0.8 and aucs["sum"] > aucs["mean"] + 0.05, aucs
    assert 0.3 < losses["sum"] < losses["mean"] - 0.05 and losses["mean"] < 0.7, losses
    with pytest.raises(ValueError, match="loss_reduction.*'total'"):
        small_deepfm(cols).compile("sgd", loss_reduction="total")


def test_validation_split_holds_out_the_last_rows(capsys):
    x, y, cols = planted(1000)
    m = small_deepfm(cols)
    m.compile("adam", metrics=["auc", "logloss"])
    h = m.fit(x, y, batch_size=100, epochs=1, verbose=2, validation_split=0.25, shuffle=False)
    out = capsys.readouterr().out
    assert "Train on 750 samples, validate on 250 samples, 8 steps per epoch" in out
    assert "Epoch 1/1" in out and " - val_auc: " in out and " - logloss: " in out
    last = {k: v[750:] for k, v in x.items()}
    first = {k: v[:250] for k, v in x.items()}
    # the final epoch's validation used the final weights, so it equals evaluate() on the last quarter exactly
    assert h.history["val_auc"][0] == pytest.approx(m.evaluate(last, y[750:])["auc"], abs=1e-9)
    assert h.history["val_auc"][0] != pytest.approx(m.evaluate(first, y[:250])["auc"], abs=1e-9)


def test_validation_data_verbose_progress_and_regression(capsys):
    x, y, cols = planted(1200)
    target = 3.0 * x["x1"] + (x["a"] % 2) + 1.0  # a regression target with the same structure
    m = DeepFM(cols, cols, dnn_hidden_units=(16,), task="regression", seed=0)
    m.compile("adagrad", "mse", metrics=["mse", "mae"])
    h = m.fit(x, target, batch_size=32, epochs=5, verbose=1,
              validation_data=({k: v[:300] for k, v in x.items()}, target[:300]))
    cap = capsys.readouterr()
    assert "epoch 1/5" in cap.err  # the engine's tqdm bar
    assert "Epoch 5/5" in cap.out and "val_mse" in cap.out
    assert h.history["val_mse"][-1] < 0.5 * h.history["val_mse"][0]
    p = m.predict(x)
    assert p.shape == (1200, 1) and p.max() > 1.5  # values, not probabilities
    with pytest.raises(ValueError, match="does not fit task"):
        m.compile("adam", "binary_crossentropy")


def test_recompile_keeps_weights_and_optimizer_names():
    x, y, cols = planted(600)
    m = small_deepfm(cols)
    m.compile("sgd")
    m.fit(x, y, epochs=1, verbose=0)
    before = m.predict(x)
    with pytest.warns(UserWarning, match="rmsprop"):
        m.compile("rmsprop", metrics=["auc"])
    np.testing.assert_allclose(m.predict(x), before, atol=1e-6)
    assert m._optim[1].name == "adagrad"  # the documented fused counterpart of RMSprop
    m.compile("adagrad", sparse_optimizer="rowwise_adagrad")
    assert (m._optim[0].name, m._optim[1].name, m._optim[1].lr) == ("adagrad", "rowwise_adagrad", 0.01)
    with pytest.raises(ValueError, match="unknown optimizer 'nadam'"):
        m.compile("nadam")
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['f1'\]"):
        m.compile("adam", metrics=["f1"])
    import torch

    with pytest.raises(TypeError, match="not supported"):
        m.compile(torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))]))


# ---- callbacks ---------------------------------------------------------------------------------------------
def test_early_stopping_sets_stop_training():
    x, y, cols = planted(800)
    m = small_deepfm(cols)
    m.compile("adagrad", metrics=["auc"])
    es = EarlyStopping(monitor="val_auc", min_delta=1.0, patience=1, mode="max")  # nothing improves by 1.0
    h = m.fit(x, y, batch_size=200, epochs=10, verbose=0, validation_split=0.2, callbacks=[es])
    assert h.epoch == [0, 1] and es.stopped_epoch == 1  # epoch 0 sets the best, epoch 1 exhausts patience 1
    assert m.trainer.stop_training


def test_model_checkpoint_writes_and_restores(tmp_path):
    x, y, cols = planted(800)
    m = small_deepfm(cols)
    m.compile("adagrad", metrics=["auc"])
    ck = ModelCheckpoint(str(tmp_path / "ep{epoch:02d}"), monitor="val_auc", mode="max")
    m.fit(x, y, batch_size=200, epochs=2, verbose=0, validation_split=0.2, callbacks=[ck])
    assert ck.saved == [str(tmp_path / "ep01"), str(tmp_path / "ep02")]
    assert list((tmp_path / "ep02").glob("step_*/COMMITTED"))
    after_two = m.predict(x)
    m.fit(x, y, batch_size=200, epochs=1, verbose=0)
    assert not np.allclose(m.predict(x), after_two)
    m.load_weights(str(tmp_path / "ep02"))
    np.testing.assert_allclose(m.predict(x), after_two, atol=1e-7)

    best = ModelCheckpoint(str(tmp_path / "best"), monitor="val_auc", save_best_only=True, mode="max")
    h = m.fit(x, y, batch_size=200, epochs=4, verbose=0, validation_split=0.2, callbacks=[best])
    aucs = h.history["val_auc"]
    improvements = sum(1 for i, v in enumerate(aucs) if v > max(aucs[:i], default=-1.0))
    assert len(best.saved) == improvements >= 1


# ---- inputs ------------------------------------------------------------------------------------------------
def test_bad_inputs_are_clear_errors():
    x, y, cols = planted(100)
    m = small_deepfm(cols)
    m.compile("adam")
    with pytest.raises(KeyError, match="'b' is missing from x"):
        m.fit({k: v for k, v in x.items() if k != "b"}, y, verbose=0)
    with pytest.raises(ValueError, match=r"feature 'a': max id 25 >= vocabulary_size 20"):
        m.fit({**x, "a": np.where(np.arange(100) == 7, 25, x["a"])}, y, verbose=0)
    with pytest.raises(ValueError, match=r"label 'label': NaN"):
        m.fit(x, np.where(np.arange(100) == 3, np.nan, y), verbose=0)
    with pytest.raises(ValueError, match=r"column 'x1' has 99 rows but column 'a' has 100"):
        m.fit({**x, "x1": x["x1"][:99]}, y, verbose=0)
    with pytest.raises(TypeError, match=r"feature 'b': ids must be integers"):
        m.predict({**x, "b": x["b"].astype(str)})
    with pytest.raises(TypeError, match="unexpected keyword argument 'l2_reg_embeding'"):
        DeepFM(cols, cols, l2_reg_embeding=1e-5)
    with pytest.raises(RuntimeError, match="compile"):
        small_deepfm(cols).fit(x, y)


def test_numpy_vocabulary_sizes_and_feature_names():
    f = SparseFeat("C1", np.int64(7), embedding_dim=np.int64(4))
    assert (f.vocabulary_size, f.embedding_dim) == (7, 4) and type(f.vocabulary_size) is int
    v = VarLenSparseFeat(SparseFeat("h", 9, 4), maxlen=np.int64(3), length_name="h_len")
    assert get_feature_names([f, DenseFeat("d", np.int64(2)), v, f]) == ["C1", "d", "h", "h_len"]


def test_varlen_padding_conventions():
    s = FeatureSchema((VarLenSparseFeat(SparseFeat("h", 9, 4), maxlen=2),
                       VarLenSparseFeat(SparseFeat("g", 9, 4), maxlen=3, length_name="g_len")), (LabelSpec("y"),))
    h = np.array([[0, 5, 0, 7], [3, 0, 0, 0], [0, 0, 0, 0]])  # non-zero ids, at most maxlen=2 kept
    g = np.array([[0, 4, 4], [1, 2, 3], [8, 8, 8]])  # with a length column, 0 is an ordinary id
    b = prepare(s, {"h": h, "g": g, "g_len": [2, 3, 0]}).batch(np.arange(3))
    assert b.sparse["h"].lengths().tolist() == [2, 1, 0] and b.sparse["h"].values().tolist() == [5, 7, 3]
    assert b.sparse["g"].lengths().tolist() == [2, 3, 0] and b.sparse["g"].values().tolist() == [0, 4, 1, 2, 3]
    with pytest.raises(ValueError, match="'h': max id 16 >= vocabulary_size 9"):
        prepare(s, {"h": h + 9 * (h > 0), "g": g, "g_len": [1, 1, 1]})


def test_varlen_padded_input_learns():
    rng = np.random.default_rng(5)
    n = 2000
    hist = rng.integers(1, 7, (n, 5))
    hist[rng.random((n, 5)) < 0.5] = 0  # padding anywhere
    has3 = (hist == 3).any(axis=1)
    y = (rng.random(n) < np.where(has3, 0.95, 0.05)).astype(np.float32)
    cols = [SparseFeat("a", 4, 4), VarLenSparseFeat(SparseFeat("hist", 7, 4), maxlen=5, combiner="sum")]
    x = {"a": rng.integers(0, 4, n), "hist": hist}
    m = DeepFM(cols, cols, dnn_hidden_units=(16,), seed=1)
    m.compile("adagrad", metrics=["auc"])
    h = m.fit(x, y, batch_size=64, epochs=5, verbose=0, validation_split=0.25)
    assert h.history["val_auc"][-1] > 0.85  # Bayes AUC ~0.94


# ---- generated classes -------------------------------------------------------------------------------------
def test_every_registered_model_has_a_compat_class():
    assert set(cm.__all__) == set(MODEL_REGISTRY)
    for name in MODEL_REGISTRY:
        cls = getattr(cm, name)
        params = list(inspect.signature(cls).parameters)
        assert params[: len(cls.spec.column_args)] == list(cls.spec.column_args)
        assert {"seed", "device", "gpus"} <= set(params)
    sig = inspect.signature(cm.DeepFM)
    assert list(sig.parameters)[:3] == ["linear_feature_columns", "dnn_feature_columns", "use_fm"]
    assert sig.parameters["l2_reg_embedding"].default == 1e-5 and sig.parameters["seed"].default == 1024


def test_positional_arguments_din_mlr_and_multitask_map_to_configs():
    x, y, cols = planted(10)
    m = cm.DeepFM(cols, cols[:2], False, (8,))  # DeepCTR's positional order
    assert (m.config.use_fm, m.config.dnn_hidden_units, m.config.dnn_feature_names) == (False, (8,), ("a", "b"))
    mlr = cm.MLR(cols, None, cols[2:], 3)
    assert (mlr.config.region_num, mlr.config.base_feature_names, mlr.config.bias_feature_names) == (3, None, ("x1",))
    din_cols = [SparseFeat("item", 10, 4), VarLenSparseFeat(SparseFeat("hist_item", 10, 4, embedding_name="item"), 3)]
    din = cm.DIN(din_cols, ["item"], dnn_hidden_units=(8,))
    assert din.config.history_feature_list == ("item",)
    with pytest.raises(TypeError, match="history_feature_list"):
        cm.DIN(din_cols)
    if "MMOE" in MODEL_REGISTRY:
        mm = cm.MMOE(cols, task_types=("binary", "regression"), task_names=("click", "stay"))
        assert mm.schema.label_names == ["click", "stay"] and mm.task_types == ("binary", "regression")
        x, y, cols = planted(400)
        two = cm.MMOE(cols, 2, (8,), (4,), (4,), task_names=("click", "pos"))
        two.compile("adagrad", ["binary_crossentropy", "binary_crossentropy"], metrics=["auc"])
        h = two.fit(x, np.stack([y, (x["x1"] > 0).astype(np.float32)], 1), batch_size=100, epochs=1, verbose=0,
                    validation_split=0.25)
        assert set(h.history) == {"loss", "auc", "click_auc", "pos_auc", "val_auc", "val_click_auc", "val_pos_auc"}
        assert h.history["auc"][0] == pytest.approx((h.history["click_auc"][0] + h.history["pos_auc"][0]) / 2)
        assert two.predict(x).shape == (400, 2)


def test_din_trains_on_padded_history():
    rng = np.random.default_rng(2)
    n = 400
    item = rng.integers(1, 10, n)
    hist = rng.integers(1, 10, (n, 4))
    hist[rng.random((n, 4)) < 0.3] = 0
    y = (hist == item[:, None]).any(axis=1).astype(np.float32)  # click iff the item is in the history
    cols = [SparseFeat("item", 10, 4), VarLenSparseFeat(SparseFeat("hist_item", 10, 4, embedding_name="item"), 4)]
    m = cm.DIN(cols, ["item"], dnn_hidden_units=(16,), att_hidden_size=(8,))
    m.compile("adam", "binary_crossentropy", metrics=["auc"])
    h = m.fit({"item": item, "hist_item": hist}, y, batch_size=64, epochs=2, verbose=0)
    assert len(h.history["auc"]) == 2 and np.isfinite(h.history["loss"]).all()
    assert m.predict({"item": item, "hist_item": hist}).shape == (n, 1)


PEER = Path.home() / ".cache" / "dist_ctr_peer" / "deepctr_torch" / "models"


def test_positional_order_and_defaults_match_deepctr_torch_source():
    """Argument names, order and literal defaults against DeepCTR-Torch 0.2.9's source (parsed, not imported) when
    installed: a program moved over by changing its import builds the same model."""
    if not PEER.is_dir():
        pytest.skip(f"DeepCTR-Torch source not found at {PEER} (scripts/peer_env.sh installs it)")
    peer: dict[str, tuple[list[str], dict[str, object]]] = {}
    for p in list(PEER.glob("*.py")) + list(PEER.glob("multitask/*.py")):
        for node in ast.parse(p.read_text()).body:
            if isinstance(node, ast.ClassDef) and any("BaseModel" in ast.unparse(b) for b in node.bases):
                for f in node.body:
                    if isinstance(f, ast.FunctionDef) and f.name == "__init__":
                        names = [a.arg for a in f.args.args][1:]
                        defaults: dict[str, object] = {}
                        for a, d in zip(names[len(names) - len(f.args.defaults):], f.args.defaults):
                            try:
                                defaults[a] = ast.literal_eval(d)
                            except ValueError:  # not a literal (e.g. a tuple of names): not compared
                                pass
                        peer[node.name] = (names, defaults)
    checked = 0
    for name, (args, defaults) in peer.items():
        if name not in MODEL_REGISTRY:
            continue
        params = inspect.signature(getattr(cm, name)).parameters
        assert list(params)[: len(args)] == args, name
        for a, d in defaults.items():
            ours = params[a].default
            ours = list(ours) if isinstance(ours, tuple) else ours
            assert ours == (list(d) if isinstance(d, tuple) else d), f"{name}.{a}: ours {ours!r}, DeepCTR-Torch {d!r}"
        checked += 1
    assert checked >= 5


def test_defaults_where_the_engine_config_differs_are_deepctr_torchs():
    """DIEN's config turns the auxiliary loss on and keeps PyTorch's init; the facade's DIEN, like DeepCTR-Torch's,
    has the loss off and DeepCTR-Torch's init. DIFM has 4 heads, as in DeepCTR-Torch 0.2.9."""
    from dist_ctr.models.dien import DIENConfig

    assert DIENConfig.use_negsampling is True
    assert inspect.signature(cm.DIEN).parameters["use_negsampling"].default is False
    assert DIENConfig.deepctr_init is False
    assert inspect.signature(cm.DIEN).parameters["deepctr_init"].default is True
    assert inspect.signature(cm.DIFM).parameters["att_head_num"].default == 4


def test_compile_adagrad_uses_torch_adagrad_defaults_on_embeddings_too():
    """``compile("adagrad")`` is DeepCTR-Torch's ``torch.optim.Adagrad(lr=0.01)`` (eps 1e-10) for every
    parameter: the fused embedding optimizer gets the same lr and eps."""
    from dist_ctr.compat.base import OPTIMIZERS

    dense, sparse = OPTIMIZERS["adagrad"]
    ref = torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(1))], lr=0.01).defaults
    assert (sparse.name, sparse.lr, sparse.eps) == ("adagrad", ref["lr"], ref["eps"])
    assert (dense.name, dense.lr) == ("adagrad", ref["lr"])
    _x, _y, cols = planted(10)
    m = small_deepfm(cols)
    m.compile("adagrad", "binary_crossentropy")
    assert m._optim is not None and m._optim[1].eps == ref["eps"]
