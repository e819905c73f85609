"""Constructor signatures of the compat model classes, derived from the model registry.

Each class takes DeepCTR-Torch's arguments in DeepCTR-Torch's positional order (the names in
:data:`DEEPCTR_ARGS`, taken from DeepCTR-Torch 0.2.9), followed by keyword-only extras: the model config's
fields DeepCTR-Torch does not have (e.g. DIN's ``history_features``). A registered model DeepCTR-Torch does not
have gets a signature derived from its config: its column arguments (one per ``*_feature_names`` field, named
``*_feature_columns``; ``dnn_feature_columns`` when there is none), the config fields in order with ``seed``
after ``init_std``, then ``task`` (or ``task_types`` / ``task_names`` when the config has them), ``device``,
``gpus``.

Defaults come from the config dataclass (one source of truth), except where the engine's config deliberately
differs from DeepCTR-Torch 0.2.9 (:data:`DEEPCTR_DEFAULTS`: DIEN's ``use_negsampling`` and ``deepctr_init``);
``seed=1024``, ``task="binary"``, ``device="cpu"``, ``gpus=None``, ``task_types=("binary", "binary")``, ``task_names=("ctr", "ctcvr")`` as in
DeepCTR-Torch.

>>> from dist_ctr.models.deepfm import DeepFMConfig
>>> spec = model_spec("DeepFM", DeepFMConfig)
>>> list(spec.signature.parameters)[:4], spec.column_args
(['linear_feature_columns', 'dnn_feature_columns', 'use_fm', 'dnn_hidden_units'], ('linear_feature_columns', 'dnn_feature_columns'))
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any

# DeepCTR-Torch 0.2.9 constructor argument names, in positional order.
DEEPCTR_ARGS: dict[str, str] = {
    "AFM": "linear_feature_columns dnn_feature_columns use_attention attention_factor l2_reg_linear l2_reg_embedding "
           "l2_reg_att afm_dropout init_std seed task device gpus",
    "AFN": "linear_feature_columns dnn_feature_columns ltl_hidden_size afn_dnn_hidden_units l2_reg_linear "
           "l2_reg_embedding l2_reg_dnn init_std seed dnn_dropout dnn_activation task device gpus",
    "AutoInt": "linear_feature_columns dnn_feature_columns att_layer_num att_head_num att_res dnn_hidden_units "
               "dnn_activation l2_reg_dnn l2_reg_embedding dnn_use_bn dnn_dropout init_std seed task device gpus",
    "CCPM": "linear_feature_columns dnn_feature_columns conv_kernel_width conv_filters dnn_hidden_units l2_reg_linear "
            "l2_reg_embedding l2_reg_dnn dnn_dropout init_std seed task device dnn_use_bn dnn_activation gpus",
    "DCN": "linear_feature_columns dnn_feature_columns cross_num cross_parameterization dnn_hidden_units l2_reg_linear "
           "l2_reg_embedding l2_reg_cross l2_reg_dnn init_std seed dnn_dropout dnn_activation dnn_use_bn task device "
           "gpus",
    "DCNMix": "linear_feature_columns dnn_feature_columns cross_num dnn_hidden_units l2_reg_linear l2_reg_embedding "
              "l2_reg_cross l2_reg_dnn init_std seed dnn_dropout low_rank num_experts dnn_activation dnn_use_bn task "
              "device gpus",
    "DIEN": "dnn_feature_columns history_feature_list gru_type use_negsampling alpha use_bn dnn_hidden_units "
            "dnn_activation att_hidden_units att_activation att_weight_normalization l2_reg_dnn l2_reg_embedding "
            "dnn_dropout init_std seed task device gpus",
    "DIFM": "linear_feature_columns dnn_feature_columns att_head_num att_res dnn_hidden_units l2_reg_linear "
            "l2_reg_embedding l2_reg_dnn init_std seed dnn_dropout dnn_activation dnn_use_bn task device gpus",
    "DIN": "dnn_feature_columns history_feature_list dnn_use_bn dnn_hidden_units dnn_activation att_hidden_size "
           "att_activation att_weight_normalization l2_reg_dnn l2_reg_embedding dnn_dropout init_std seed task device "
           "gpus",
    "DeepFM": "linear_feature_columns dnn_feature_columns use_fm dnn_hidden_units l2_reg_linear l2_reg_embedding "
              "l2_reg_dnn init_std seed dnn_dropout dnn_activation dnn_use_bn task device gpus",
    "ESMM": "dnn_feature_columns tower_dnn_hidden_units l2_reg_linear l2_reg_embedding l2_reg_dnn init_std seed "
            "dnn_dropout dnn_activation dnn_use_bn task_types task_names device gpus",
    "FiBiNET": "linear_feature_columns dnn_feature_columns bilinear_type reduction_ratio dnn_hidden_units l2_reg_linear "
               "l2_reg_embedding l2_reg_dnn init_std seed dnn_dropout dnn_activation task device gpus",
    "IFM": "linear_feature_columns dnn_feature_columns dnn_hidden_units l2_reg_linear l2_reg_embedding l2_reg_dnn "
           "init_std seed dnn_dropout dnn_activation dnn_use_bn task device gpus",
    "MLR": "region_feature_columns base_feature_columns bias_feature_columns region_num l2_reg_linear init_std seed "
           "task device gpus",
    "MMOE": "dnn_feature_columns num_experts expert_dnn_hidden_units gate_dnn_hidden_units tower_dnn_hidden_units "
            "l2_reg_linear l2_reg_embedding l2_reg_dnn init_std seed dnn_dropout dnn_activation dnn_use_bn task_types "
            "task_names device gpus",
    "NFM": "linear_feature_columns dnn_feature_columns dnn_hidden_units l2_reg_embedding l2_reg_linear l2_reg_dnn "
           "init_std seed bi_dropout dnn_dropout dnn_activation task device gpus",
    "ONN": "linear_feature_columns dnn_feature_columns dnn_hidden_units l2_reg_embedding l2_reg_linear l2_reg_dnn "
           "dnn_dropout init_std seed dnn_use_bn dnn_activation task device gpus",
    "PLE": "dnn_feature_columns shared_expert_num specific_expert_num num_levels expert_dnn_hidden_units "
           "gate_dnn_hidden_units tower_dnn_hidden_units l2_reg_linear l2_reg_embedding l2_reg_dnn init_std seed "
           "dnn_dropout dnn_activation dnn_use_bn task_types task_names device gpus",
    "PNN": "dnn_feature_columns dnn_hidden_units l2_reg_embedding l2_reg_dnn init_std seed dnn_dropout dnn_activation "
           "use_inner use_outter kernel_type task device gpus",
    "SharedBottom": "dnn_feature_columns bottom_dnn_hidden_units tower_dnn_hidden_units l2_reg_linear l2_reg_embedding "
                    "l2_reg_dnn init_std seed dnn_dropout dnn_activation dnn_use_bn task_types task_names device gpus",
    "WDL": "linear_feature_columns dnn_feature_columns dnn_hidden_units l2_reg_linear l2_reg_embedding l2_reg_dnn "
           "init_std seed dnn_dropout dnn_activation dnn_use_bn task device gpus",
    "xDeepFM": "linear_feature_columns dnn_feature_columns dnn_hidden_units cin_layer_size cin_split_half "
               "cin_activation l2_reg_linear l2_reg_embedding l2_reg_dnn l2_reg_cin init_std seed dnn_dropout "
               "dnn_activation dnn_use_bn task device gpus",
}

# DeepCTR-Torch arguments with no effect there either (its multi-task models have no linear part), so a model
# config may leave them out; they are accepted and ignored.
NO_EFFECT_ARGS: dict[str, float] = {"l2_reg_linear": 1e-5}

# Arguments the wrapper handles itself (not config fields).
WRAPPER_DEFAULTS: dict[str, Any] = {
    "seed": 1024,
    "task": "binary",
    "device": "cpu",
    "gpus": None,
    "task_types": ("binary", "binary"),
    "task_names": ("ctr", "ctcvr"),
}
# DeepCTR-Torch 0.2.9's defaults where the engine's config deliberately differs, so a program moved over trains the
# same model: DIEN's config turns the auxiliary loss on and keeps PyTorch's init for its GRUs and attention MLP
# (RecBole's choices); DeepCTR-Torch's DIEN has the loss off and starts those weights at N(0, init_std) / N(0, 1e-4).
DEEPCTR_DEFAULTS: dict[str, dict[str, Any]] = {"DIEN": {"use_negsampling": False, "deepctr_init": True}}
# DeepCTR-Torch arguments that are required (no default) besides the column lists.
REQUIRED = {"history_feature_list"}
# Config fields that are layout choices of this library, never positional (DeepCTR has no such argument).
KEYWORD_ONLY = {"linear_in_embedding_tables"}
# Column lists that default to None (MLR's optional learners).
OPTIONAL_COLUMNS = {"base_feature_columns", "bias_feature_columns"}


@dataclass(frozen=True)
class ModelSpec:
    """How a compat class maps its arguments.

    Attributes:
        name (str): registry name (= DeepCTR class name).
        config_cls (type): the model's config dataclass.
        signature (inspect.Signature): the constructor's (without ``self``).
        column_args (tuple[str, ...]): arguments holding feature columns, in order.
        multitask (bool): ``task_types`` / ``task_names`` instead of ``task``.
        ignored (tuple[str, ...]): DeepCTR arguments accepted without effect.
    """

    name: str
    config_cls: type
    signature: inspect.Signature
    column_args: tuple[str, ...]
    multitask: bool
    ignored: tuple[str, ...]


def _columns_of(fields: list[str]) -> list[str]:
    cols = [f[: -len("_names")] + "_columns" for f in fields if f.endswith("_feature_names")]
    order = {"linear_feature_columns": 0, "dnn_feature_columns": 1}
    cols.sort(key=lambda c: order.get(c, 2))  # stable: others keep config order
    return cols or ["dnn_feature_columns"]


def derived_args(config_cls: type) -> list[str]:
    """DeepCTR-style positional order for a model DeepCTR-Torch does not have."""
    fields = [f.name for f in dataclasses.fields(config_cls)]
    multitask = "task_types" in fields
    body = [f for f in fields if not f.endswith("_feature_names") and f not in ("task_types", "task_names")
            and f not in KEYWORD_ONLY]
    if "init_std" in body:
        body.insert(body.index("init_std") + 1, "seed")
    else:
        body.append("seed")
    tail = ["task_types", "task_names"] if multitask else ["task"]
    return _columns_of(fields) + body + tail + ["device", "gpus"]


def model_spec(name: str, config_cls: type) -> ModelSpec:
    """The :class:`ModelSpec` of registered model ``name``."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    args = DEEPCTR_ARGS[name].split() if name in DEEPCTR_ARGS else derived_args(config_cls)
    P = inspect.Parameter
    params: list[inspect.Parameter] = []
    columns: list[str] = []
    ignored: list[str] = []
    for a in args:
        if a.endswith("_feature_columns"):
            columns.append(a)
            default = None if a in OPTIONAL_COLUMNS else P.empty
        elif a in REQUIRED:
            default = P.empty
        elif a in fields:
            f = fields[a]
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else P.empty)  # type: ignore[misc]
            if a in ("task_types", "task_names") and default is None:
                default = WRAPPER_DEFAULTS[a]
            default = DEEPCTR_DEFAULTS.get(name, {}).get(a, default)
        elif a in WRAPPER_DEFAULTS:
            default = WRAPPER_DEFAULTS[a]
        elif a in NO_EFFECT_ARGS:
            default = NO_EFFECT_ARGS[a]
            ignored.append(a)
        else:
            raise TypeError(f"compat {name}: DeepCTR-Torch argument {a!r} has no field in {config_cls.__name__}; "
                            "add it to the config or to NO_EFFECT_ARGS")
        if params and params[-1].default is not P.empty and default is P.empty:
            default = None  # cannot follow a defaulted positional; checked in the constructor
        params.append(P(a, P.POSITIONAL_OR_KEYWORD, default=default))
    taken = set(args)
    for f in dataclasses.fields(config_cls):
        if f.name in taken or f.name.endswith("_feature_names"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else P.empty)  # type: ignore[misc]
        default = DEEPCTR_DEFAULTS.get(name, {}).get(f.name, default)
        params.append(P(f.name, P.KEYWORD_ONLY, default=default))
    multitask = "task_types" in taken
    return ModelSpec(name, config_cls, inspect.Signature(params), tuple(columns), multitask, tuple(ignored))
