"""The two sides of the DeepCTR-Torch peer benchmark (``scripts/bench_peer_deepctr.py``,
``scripts/peer_trajectory.py``): the peer's import with its stand-in modules, our typed config from the peer's
constructor defaults, and one training run of each library.

The peer (DeepCTR-Torch 0.2.9) is imported from a cache dir outside the repository (``scripts/peer_env.sh``
installs it there with ``--no-deps``); no DeepCTR-Torch code lives in this repository. Two stand-ins are put in
``sys.modules`` before ``deepctr_torch`` is imported (after torch / TorchRec, whose import probes for a real
``tensorflow``):
  - ``tensorflow.python.keras.callbacks``: DeepCTR-Torch imports ``EarlyStopping``, ``ModelCheckpoint``,
    ``History`` and ``CallbackList`` from TensorFlow. Minimal classes written here (``History`` records epoch
    logs, ``CallbackList`` forwards hooks); the bench passes no callbacks, so only ``History`` ever does work.
  - ``deepctr_torch.utils``: its ``check_version`` starts a thread that queries PyPI on import; the stand-in's
    ``check_version`` does nothing (no network, no background thread during timing).

Arguments set on both sides: ``BOTH_SIDES`` per model, plus ``SET_BOTH`` (the bench's ``--set KEY=VALUE``; a
caller updates the dict in place) for every model whose constructor takes the key.

>>> both_sides("DIEN", {"gru_type"})["gru_type"]
'AUGRU'
>>> t = Timing()
>>> t.add(rows=8, seconds=2.0, stamps=[0.0, 1.0, 2.0])
>>> t.result(batch=4)["samples_per_s"], t.result(batch=4)["median_step_samples_per_s"]
(4.0, 4.0)
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.machinery
import inspect
import io
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

from dist_ctr.bench.peer_data import DENSE_NAMES, SEQ_TARGETS, SPARSE_NAMES, Data, SeqData, task_aucs
from dist_ctr.config import DenseOptimConfig, SparseOptimConfig
from dist_ctr.data.batch import CTRBatch
from dist_ctr.distributed.env import DistEnv
from dist_ctr.models import MODEL_REGISTRY, build_model
from dist_ctr.schema import FeatureSchema
from dist_ctr.sparse.arch import LINEAR_INIT_STD_SCALE
from dist_ctr.train.engine import Trainer

__all__ = ["BOTH_SIDES", "OursRunner", "PEER_CTOR_SKIP", "PeerRunner", "SET_BOTH", "SPARSE_ONLY_DNN", "Timing",
           "both_sides", "import_peer", "install_peer_shims", "our_config", "peer_columns", "peer_model",
           "peer_style_init", "peer_x", "table_shards"]


# DeepCTR-Torch models that take sparse columns only in dnn_feature_columns (support_dense=False in forward).
SPARSE_ONLY_DNN = ("AFM", "CCPM")
PEER_CTOR_SKIP = {"linear_feature_columns", "dnn_feature_columns", "region_feature_columns", "base_feature_columns",
                  "bias_feature_columns", "seed", "task", "device", "gpus", "task_types", "task_names"}
# Arguments set on both sides (the peer gets lists): the targets of the sequence models, DIEN's interest evolving.
BOTH_SIDES = {"DIN": {"history_feature_list": SEQ_TARGETS},
              "DIEN": {"history_feature_list": SEQ_TARGETS, "gru_type": "AUGRU"}}
SET_BOTH: dict[str, Any] = {}  # ``--set KEY=VALUE``: applied to every model on both sides whose constructor takes KEY


def fix_peer_onn_init(model: torch.nn.Module, init_std: float) -> int:
    """Start the second table of every pair module (``Interac``) of DeepCTR-Torch's ONN at ``N(0, init_std)``, as
    its first table and every field-aware vector of ours start; the peer leaves it at ``nn.Embedding``'s
    ``N(0, 1)``. A diagnostic for the bench's ``--peer-onn-init``; returns the tables re-initialised."""
    fixed = 0
    for m in model.modules():
        if type(m).__name__ == "Interac":
            torch.nn.init.normal_(m.emb2.weight, mean=0.0, std=init_std)
            fixed += 1
    return fixed


def fix_peer_mlr_learners(model: torch.nn.Module) -> None:
    """Make DeepCTR-Torch's MLR score its learners with its base linear models (``base_linear_model``), as the MLR
    paper and ours do; the peer's ``get_learner_score`` reads its region models, so its base learners are never
    used. A diagnostic for the bench's ``--peer-mlr-learners``."""
    base = model.base_linear_model  # type: ignore[attr-defined]

    def learner_score(inputs: torch.Tensor, region_number: int) -> torch.Tensor:
        logits = torch.cat([base[i](inputs) for i in range(region_number)], dim=-1)  # (B, regions)
        return model.prediction_layer(logits)  # type: ignore[attr-defined, operator]

    model.get_learner_score = learner_score  # type: ignore[method-assign, assignment]


def both_sides(name: str, accepted: Any) -> dict[str, Any]:
    """``BOTH_SIDES[name]`` plus the ``SET_BOTH`` arguments whose key is in ``accepted``."""
    return {**BOTH_SIDES.get(name, {}), **{k: v for k, v in SET_BOTH.items() if k in accepted}}


# ---- the peer's import shims ------------------------------------------------------------------------------------
def _stub_module(name: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)
    return mod


def install_peer_shims() -> None:
    """Stand-ins for ``tensorflow.python.keras.callbacks`` and ``deepctr_torch.utils`` (see the module docstring)."""
    if "tensorflow.python.keras.callbacks" not in sys.modules:
        cb = _stub_module("tensorflow.python.keras.callbacks")

        class Callback:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                self.model: Any = None

            def set_model(self, model: Any) -> None:
                self.model = model

            def on_train_begin(self, logs: Any = None) -> None: ...

            def on_train_end(self, logs: Any = None) -> None: ...

            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None: ...

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None: ...

        class History(Callback):
            def on_train_begin(self, logs: Any = None) -> None:
                self.epoch: list[int] = []
                self.history: dict[str, list[float]] = {}

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                self.epoch.append(epoch)
                for k, v in (logs or {}).items():
                    self.history.setdefault(k, []).append(v)

        class CallbackList:
            def __init__(self, callbacks: Any = None) -> None:
                self.callbacks = list(callbacks or [])
                self.model: Any = None

            def set_model(self, model: Any) -> None:
                self.model = model
                for c in self.callbacks:
                    c.set_model(model)

            def __getattr__(self, hook: str) -> Callable[..., None]:
                if not hook.startswith("on_"):
                    raise AttributeError(hook)
                return lambda *a, **k: [getattr(c, hook)(*a, **k) for c in self.callbacks] and None

        class EarlyStopping(Callback): ...

        class ModelCheckpoint(Callback): ...

        for cls in (Callback, History, CallbackList, EarlyStopping, ModelCheckpoint):
            setattr(cb, cls.__name__, cls)
        parents = ["tensorflow", "tensorflow.python", "tensorflow.python.keras"]
        for p in parents:
            sys.modules.setdefault(p, _stub_module(p))
        sys.modules["tensorflow.python.keras.callbacks"] = cb
    if "deepctr_torch.utils" not in sys.modules:
        utils = _stub_module("deepctr_torch.utils")
        utils.check_version = lambda version: None  # type: ignore[attr-defined]
        sys.modules["deepctr_torch.utils"] = utils


def import_peer(peer_dir: str) -> types.ModuleType:
    """``deepctr_torch`` (with ``.inputs`` and ``.models``) from ``peer_dir``, after :func:`install_peer_shims`;
    ``SystemExit`` naming ``scripts/peer_env.sh`` when it is not there."""
    if not Path(peer_dir, "deepctr_torch").is_dir():
        raise SystemExit(f"DeepCTR-Torch not found under {peer_dir!r}: run `scripts/peer_env.sh` (it prints the dir) "
                         "and pass --peer-dir")
    install_peer_shims()
    sys.path.insert(0, peer_dir)
    import deepctr_torch  # noqa: F401
    import deepctr_torch.inputs
    import deepctr_torch.models

    if getattr(deepctr_torch, "__version__", "?") != "0.2.9":
        print(f"warning: peer is deepctr_torch {deepctr_torch.__version__}, not 0.2.9")
    return deepctr_torch


# ---- our side ---------------------------------------------------------------------------------------------------
def our_config(name: str, peer_cls: type) -> tuple[dict[str, Any], dict[str, tuple[Any, Any]]]:
    """Our typed config for ``name`` with the peer's constructor defaults for every field of the same name, then
    the arguments set on both sides (``BOTH_SIDES``)."""
    fields = {f.name: f for f in dataclasses.fields(MODEL_REGISTRY[name].config_cls)}
    cfg: dict[str, Any] = {}
    changed: dict[str, tuple[Any, Any]] = {}
    for k, p in inspect.signature(peer_cls.__init__).parameters.items():
        if k in PEER_CTOR_SKIP or k not in fields or p.default is inspect.Parameter.empty:
            continue
        v = tuple(p.default) if isinstance(p.default, list) else p.default
        cfg[k] = v
        ours = fields[k].default
        if ours is not dataclasses.MISSING and (tuple(ours) if isinstance(ours, list) else ours) != v:
            changed[k] = (ours, v)
    cfg.update(both_sides(name, fields))
    return cfg, changed


class Timing:
    """Per-chunk wall times and per-step stamps of one side of a paired run."""

    def __init__(self) -> None:
        self.chunk_rows: list[int] = []
        self.chunk_seconds: list[float] = []
        self.step_seconds: list[float] = []

    def add(self, rows: int, seconds: float, stamps: list[float]) -> None:
        self.chunk_rows.append(rows)
        self.chunk_seconds.append(seconds)
        self.step_seconds.extend(np.diff(np.asarray(stamps)).tolist())

    def result(self, batch: int) -> dict[str, float]:
        rows, secs = np.asarray(self.chunk_rows), np.asarray(self.chunk_seconds)
        med_step = float(np.median(self.step_seconds)) if self.step_seconds else float("nan")
        return {"samples_per_s": float(np.median(rows / secs)), "pass_samples_per_s": float(rows.sum() / secs.sum()),
                "median_step_samples_per_s": batch / med_step, "seconds": float(secs.sum()),
                "timed_rows": int(rows.sum()), "chunks": len(rows)}


def table_shards(dmp: torch.nn.Module) -> Iterator[tuple[str, Any]]:
    """``(table name, local shard)`` for every local shard of the DMP's sharded tables, pooled
    (``EmbeddingBagCollection``) and sequence (``EmbeddingCollection``) alike; ``shard.tensor`` is writable in
    place (at world size 1 a view of the fused TBE weights), ``shard.metadata.shard_offsets`` its place."""
    for key, value in dmp.state_dict().items():
        part = ".embedding_bags." if ".embedding_bags." in key else ".embeddings."
        if part in key and hasattr(value, "local_shards"):
            table = key.split(part)[1].rsplit(".", 1)[0]
            for shard in value.local_shards():
                yield table, shard


def peer_style_init(trainer: Trainer, std: float) -> int:
    """Re-draw every embedding table of ``trainer`` from ``N(0, std)`` (DeepCTR-Torch's ``init_std`` init).

    Writes the local shards of the DMP's sharded tables in place (:func:`table_shards`). Our "dim-1" linear
    tables are read as the mean of 4 columns, so each column gets ``2 * std`` (the mean has std ``std``;
    ``LINEAR_INIT_STD_SCALE``); the linear part's dense weight gets ``N(0, std)`` too, as in DeepCTR's
    ``Linear``. Returns the number of tables written.
    """
    tables: set[str] = set()
    with torch.no_grad():
        for table, shard in table_shards(trainer.dmp):
            shard.tensor.normal_(0.0, std * LINEAR_INIT_STD_SCALE if table.startswith("linear__") else std)
            tables.add(table)
        for mod in trainer.dmp.modules():  # DeepCTR's Linear also draws its dense weight from N(0, init_std)
            dense_weight = getattr(mod, "dense_weight", None)
            if isinstance(dense_weight, torch.nn.Linear):
                dense_weight.weight.normal_(0.0, std)
    return len(tables)


class OursRunner:
    """One training run of ours. ``variant`` = "<fused sparse optimizer>/<mean|sum>/<peer|engine>":
      - "sum" is the engine's ``loss_reduction="sum"`` (DeepCTR's ``reduction='sum'``); "mean" its default;
      - "peer" re-draws the tables from ``N(0, init_std)`` as DeepCTR-Torch does (see :func:`peer_style_init`);
        "engine" keeps the engine's init (``N(0, init_std)`` from its own deterministic generator).
    """

    def __init__(self, name: str, cfg: dict[str, Any], schema: FeatureSchema, env: DistEnv, variant: str, lr: float,
                 batch: int, seed: int, eps: float) -> None:
        sparse_name, reduction, init = variant.split("/")
        torch.manual_seed(seed)
        model = build_model(name, schema, cfg)
        self.trainer = Trainer(model, env, sparse_optim=SparseOptimConfig(name=sparse_name, lr=lr, eps=eps),  # type: ignore[arg-type]
                               dense_optim=DenseOptimConfig(name="adagrad", lr=lr), batch_size=batch, seed=seed,
                               loss_reduction=reduction)
        if init == "peer":
            peer_style_init(self.trainer, float(getattr(getattr(model, "config", None), "init_std", 1e-4)))
        self.timing = Timing()

    def warm(self, batches: list[CTRBatch]) -> None:
        for b in batches:
            self.trainer.train_step(b)

    def train_chunk(self, batches: list[CTRBatch]) -> float:
        t0 = time.perf_counter()
        stamps = [t0]
        for b in batches:
            self.trainer.train_step(b)
            stamps.append(time.perf_counter())
        dt = stamps[-1] - t0
        self.timing.add(sum(b.batch_size for b in batches), dt, stamps)
        return dt

    def auc(self, test: list[CTRBatch], labels: np.ndarray) -> list[float]:
        """Test AUC per task."""
        return task_aucs(labels, self.trainer.predict(test).numpy())  # host sync


# ---- the peer's side --------------------------------------------------------------------------------------------
def peer_columns(dc: types.ModuleType, vocabs: list[int], dim: int) -> list[Any]:
    """DeepCTR-Torch's columns of the Criteo-shaped rows: ``C1..C26`` (dim ``dim``), ``I1..I13``."""
    inp = dc.inputs
    return ([inp.SparseFeat(n, vocabulary_size=v, embedding_dim=dim) for n, v in zip(SPARSE_NAMES, vocabs)]
            + [inp.DenseFeat(n, 1) for n in DENSE_NAMES])


def peer_model(dc: types.ModuleType, name: str, cols: list[Any], seed: int,
               dnn_cols: Optional[list[Any]] = None) -> torch.nn.Module:
    """DeepCTR-Torch's ``name`` on ``cols`` (``dnn_cols`` in the DNN part when given), with ``BOTH_SIDES``'s
    arguments (as lists)."""
    cls = getattr(dc.models, name)
    params = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {k: cols for k in ("linear_feature_columns", "dnn_feature_columns",
                                                "region_feature_columns") if k in params}
    if dnn_cols is not None and "dnn_feature_columns" in kwargs:
        kwargs["dnn_feature_columns"] = dnn_cols
    if "seed" in params:
        kwargs["seed"] = seed
    for k, v in both_sides(name, params).items():
        kwargs[k] = list(v) if isinstance(v, tuple) else v
    return cls(device="cpu", **kwargs)


def peer_x(d: Data | SeqData) -> dict[str, np.ndarray]:
    """DeepCTR-Torch's input dict (column -> ``(N,)`` or ``(N, L)`` array) of the rows ``d``."""
    if isinstance(d, SeqData):
        return d.peer_x()
    x = {n: d.sparse[:, i] for i, n in enumerate(SPARSE_NAMES)}
    x.update({n: d.dense[:, i] for i, n in enumerate(DENSE_NAMES)})
    return x


class PeerRunner:
    """One DeepCTR-Torch training run: ``compile(torch.optim.Adagrad(lr))`` and ``fit(..., verbose=0,
    shuffle=False)`` per chunk of rows; a step-post hook on its optimizer stamps every step."""

    def __init__(self, dc: types.ModuleType, name: str, cols: list[Any], lr: float, seed: int, batch: int,
                 dnn_cols: Optional[list[Any]] = None,
                 patch: Optional[Callable[[torch.nn.Module], Any]] = None) -> None:
        self.model = peer_model(dc, name, cols, seed, dnn_cols)
        if patch is not None:
            patch(self.model)
        opt = torch.optim.Adagrad(self.model.parameters(), lr=lr)
        self.stamps: list[float] = []
        opt.register_step_post_hook(lambda *_: self.stamps.append(time.perf_counter()))
        self.model.compile(opt, "binary_crossentropy", metrics=[])
        self.batch = batch
        self.timing = Timing()

    def _fit(self, d: Data | SeqData) -> None:
        with contextlib.redirect_stdout(io.StringIO()):  # fit prints the device and "Train on ..." at verbose=0
            self.model.fit(peer_x(d), d.label, batch_size=self.batch, epochs=1, verbose=0, shuffle=False)

    def warm(self, d: Data | SeqData) -> None:
        if len(d):
            self._fit(d)

    def train_chunk(self, d: Data | SeqData) -> float:
        t0 = time.perf_counter()
        self.stamps[:] = [t0]
        self._fit(d)
        dt = time.perf_counter() - t0
        self.timing.add(len(d), dt, self.stamps[1:] if len(self.stamps) > 2 else self.stamps)
        return dt

    def auc(self, test: Data | SeqData) -> list[float]:
        """Test AUC per task."""
        with contextlib.redirect_stdout(io.StringIO()):
            return task_aucs(test.label, self.model.predict(peer_x(test), batch_size=8192))
