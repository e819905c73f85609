"""``CTRBatch``: what every room downstream of ``data/`` consumes.

Notation: ``B`` batch size, ``n_dense`` dense width, ``T`` tasks.

- ``dense``: ``Tensor (B, n_dense)`` float32, schema order.
- ``sparse``: ``KeyedJaggedTensor``, keys = the schema's sparse features in order, int64 ids, int32 lengths.
- ``labels``: ``Tensor (B, T)`` float32.
- ``row_ids``: optional ``Tensor (B,)`` int64 (the data set's row ledger, when a column provides it).

Implements TorchRec's ``Pipelineable`` (``to``, ``record_stream``, ``pin_memory``) so that
``TrainPipelineSparseDist`` accepts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable


@dataclass
class CTRBatch(Pipelineable):
    dense: torch.Tensor
    sparse: KeyedJaggedTensor
    labels: torch.Tensor
    row_ids: Optional[torch.Tensor] = None

    @property
    def batch_size(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device, non_blocking: bool = False) -> "CTRBatch":
        return CTRBatch(
            dense=self.dense.to(device=device, non_blocking=non_blocking),
            sparse=self.sparse.to(device=device, non_blocking=non_blocking),
            labels=self.labels.to(device=device, non_blocking=non_blocking),
            row_ids=None if self.row_ids is None else self.row_ids.to(device=device, non_blocking=non_blocking),
        )

    def record_stream(self, stream: torch.Stream) -> None:  # type: ignore[override]
        self.dense.record_stream(stream)
        self.sparse.record_stream(stream)
        self.labels.record_stream(stream)
        if self.row_ids is not None:
            self.row_ids.record_stream(stream)

    def pin_memory(self) -> "CTRBatch":
        return CTRBatch(
            dense=self.dense.pin_memory(),
            sparse=self.sparse.pin_memory(),
            labels=self.labels.pin_memory(),
            row_ids=None if self.row_ids is None else self.row_ids.pin_memory(),
        )
