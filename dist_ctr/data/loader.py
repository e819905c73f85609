"""``ParquetLoader``: one rank's stream of ``CTRBatch`` over a Parquet data set, resumable mid-epoch, exactly once.

Notation: ``B`` batch size, ``W`` world size, ``S`` steps per epoch (the same on every rank).

How one epoch is read by rank ``r`` (everything is a pure function of listing, seed, epoch, rank, ``W``):

1. :class:`~dist_ctr.data.assignment.ShardAssignment` orders the row groups for the epoch and gives rank ``r``
   its share of rows (ranks differ by at most one row).
2. The rank's row slices are grouped, in order, into **shuffle windows** of whole slices holding at least
   ``shuffle_buffer_rows`` rows (the last window may be smaller). Window ``w`` is read (row groups in parallel
   by ``num_workers`` threads), transformed column-wise, and its rows are visited in the order of a permutation
   drawn from ``(seed, epoch, rank, w)`` (identity without ``shuffle``).
3. The rank's row stream is the concatenation of the permuted windows; batch ``k`` is rows ``[k B, (k+1) B)`` of
   that stream. With ``tail_policy="pad"`` the stream is padded to ``S B`` rows with pad rows (``row_ids == -1``,
   weight 0 in the task); with ``"drop"`` it is cut at ``S B`` rows.

So the cursor is just ``(epoch, step)``: resuming at step ``k`` re-derives the windows, reads the window holding
row ``k B``, and continues from there -- exactly the rows not yet consumed, in the same order. A background
thread prepares up to ``prefetch`` batches (bounded queue); memory is bounded by one window plus the queue,
whatever the data set's size.

``row_ids`` come from ``row_id_column`` when the data has it, else they are the rows' positions in the source's
sorted listing; pad rows (and rows of a row group skipped under ``on_bad_file="skip"``) are ``-1``.

>>> import tempfile, pyarrow as pa, pyarrow.parquet as pq
>>> from dist_ctr.schema import FeatureSchema, SparseFeat, DenseFeat
>>> d = tempfile.mkdtemp()
>>> pq.write_table(pa.table({"C1": [1, 2, 3, 4, 5], "I1": [0.5] * 5, "label": [0, 1, 0, 1, 1],
...                          "row_id": [10, 11, 12, 13, 14]}), f"{d}/a.parquet", row_group_size=2)
>>> schema = FeatureSchema((SparseFeat("C1", 8), DenseFeat("I1")))
>>> loader = build_loader(schema, DataConfig(url=d, batch_size=2, shuffle=False))
>>> len(loader), [b.row_ids.tolist() for b in loader]
(3, [[10, 11], [12, 13], [14, -1]])
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, Mapping, Optional

import numpy as np
import torch

from dist_ctr.data.assignment import ShardAssignment, UnitSlice, epoch_rng
from dist_ctr.data.batch import CTRBatch
from dist_ctr.data.config import DataConfig
from dist_ctr.data.errors import BadFileReport, DataError, SchemaMismatchError, StorageAccessError
from dist_ctr.data.source import ParquetSource
from dist_ctr.data.transforms import Columns, TableTransform, concat_lists, load_vocabulary
from dist_ctr.schema import FeatureSchema

__all__ = ["ParquetLoader", "CTRDataLoader", "build_loader"]

_WINDOW_SALT = 0x57A7E
_STATE_VERSION = 1
_END = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class ParquetLoader:
    """Iterable of :class:`~dist_ctr.data.batch.CTRBatch` for one rank and one epoch at a time.

    Args:
        schema (FeatureSchema): features and labels.
        cfg (DataConfig): data set and loader settings.
        rank (int): this rank.
        world_size (int): number of ranks ``W``.
        epoch (int): starting epoch (see :meth:`set_epoch`).
        seed (int): shuffle seed, the same on every rank.
        device (torch.device | None): batches are pinned when it is a CUDA device (moving them is the
            consumer's job: ``batch.to(device, non_blocking=True)``).
    """

    def __init__(self, schema: FeatureSchema, cfg: DataConfig, rank: int = 0, world_size: int = 1, epoch: int = 0,
                 seed: int = 0, device: Optional[torch.device] = None) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside [0, {world_size})")
        self.schema = schema
        self.cfg = cfg
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.epoch = epoch
        self.device = device
        self.bad_files = BadFileReport()
        self._seen_bad: set[tuple[str, Optional[int]]] = set()
        vocabs = {name: load_vocabulary(url, cfg.storage_options) for name, url in cfg.vocabularies.items()}
        checker = TableTransform(schema, cfg.dense, vocabs, cfg.row_id_column, labels_present=True)
        presence: dict[str, tuple[bool, bool]] = {}

        def validate(file: str, arrow_schema: Any) -> None:
            has_rid = bool(cfg.row_id_column) and arrow_schema.get_field_index(cfg.row_id_column) >= 0
            has_lab = all(arrow_schema.get_field_index(n) >= 0 for n in schema.label_names)
            checker.check_schema(file, arrow_schema, labels=cfg.require_labels or has_lab, row_id=has_rid)
            presence[file] = (has_rid, has_lab)

        self.source = ParquetSource(cfg.url, cfg.storage_options, cfg.partitions, cfg.file_suffixes, validate,
                                    cfg.on_bad_file, self.bad_files)
        units = self.source.units()
        files = sorted({u.file for u in units})
        self.has_row_id = _agree(files, presence, 0, cfg.row_id_column or "", "row-id")
        has_labels = _agree(files, presence, 1, ",".join(schema.label_names), "label")
        self.labels_present = has_labels
        self.transform = TableTransform(schema, cfg.dense, vocabs, cfg.row_id_column if self.has_row_id else None,
                                        labels_present=has_labels)
        self.columns = self.transform.columns
        self.assignment = ShardAssignment(units, world_size, cfg.num_workers, seed, cfg.shuffle)
        self._fingerprint = self.source.fingerprint()
        self._pin = device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available()
        self._step = 0
        self._resume: Optional[tuple[int, int]] = None

    # ---- epoch / length -----------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next iteration reads (a pending resume for another epoch is dropped)."""
        if self._resume is not None and self._resume[0] != epoch:
            self._resume = None
        self.epoch = epoch
        self._step = 0 if self._resume is None else self._resume[1]

    def __len__(self) -> int:
        """Steps per epoch, equal on all ranks (see ``DataConfig.tail_policy``)."""
        return self.assignment.steps_per_epoch(self.cfg.batch_size, self.cfg.tail_policy)

    @property
    def rank_rows(self) -> int:
        """Rows of the data set this rank reads per epoch (before pad / drop)."""
        return self.assignment.rank_rows(self.rank)

    # ---- cursor -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The cursor after the last batch handed out: JSON-able, resumable in another process."""
        return {
            "version": _STATE_VERSION,
            "epoch": int(self.epoch),
            "step": int(self._step),
            "rows_consumed": int(self._step) * self.cfg.batch_size,
            "rank": self.rank,
            "world_size": self.world_size,
            "seed": self.seed,
            "batch_size": self.cfg.batch_size,
            "shuffle": self.cfg.shuffle,
            "shuffle_buffer_rows": self.cfg.shuffle_buffer_rows,
            "tail_policy": self.cfg.tail_policy,
            "fingerprint": self._fingerprint,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: the next iteration yields exactly the batches after ``state['step']`` of ``state['epoch']``.

        Raises ``DataError`` naming the first setting that differs from the one the cursor was saved under.
        """
        mine = self.state_dict()
        for key in ("version", "rank", "world_size", "seed", "batch_size", "shuffle", "shuffle_buffer_rows",
                    "tail_policy", "fingerprint"):
            if key not in state:
                raise DataError(f"loader state has no {key!r}; not a ParquetLoader cursor", file=self.cfg.url)
            if state[key] != mine[key]:
                what = "the data set's listing changed" if key == "fingerprint" else f"{key} differs"
                raise DataError(f"cannot resume: {what} (saved {state[key]!r}, now {mine[key]!r})", file=self.cfg.url)
        self.epoch = int(state["epoch"])
        self._step = int(state["step"])
        self._resume = (self.epoch, self._step)

    # ---- reading ------------------------------------------------------------------------------------------
    def windows(self, epoch: int) -> list[list[UnitSlice]]:
        """This rank's shuffle windows for ``epoch``: consecutive slices of at least ``shuffle_buffer_rows`` rows."""
        out: list[list[UnitSlice]] = []
        cur: list[UnitSlice] = []
        rows = 0
        for s in self.assignment.rank_slices(self.rank, epoch):
            cur.append(s)
            rows += s.num_rows
            if rows >= self.cfg.shuffle_buffer_rows:
                out.append(cur)
                cur, rows = [], 0
        if cur:
            out.append(cur)
        return out

    def _pad(self, n: int) -> Columns:
        lay = self.transform.layout
        return Columns.pad(n, lay.n_dense, lay.n_single, lay.n_lists, lay.n_tasks)

    def _read_table(self, s: UnitSlice) -> Any:
        """The slice's Arrow table, or the DataError that reading it raised."""
        try:
            table = self.source.read(s.unit, self.columns)
        except DataError as e:
            return e
        if s.start or s.stop != s.unit.num_rows:
            table = table.slice(s.start, s.num_rows)
        return table

    def _skip_or_raise(self, e: DataError, s: UnitSlice) -> None:
        if self.cfg.on_bad_file != "skip" or isinstance(e, StorageAccessError):
            raise e
        key = (s.unit.file, s.unit.row_group)
        if key not in self._seen_bad:
            self._seen_bad.add(key)
            self.bad_files.add_error(e, rows=s.unit.num_rows)

    def _read_window(self, win: list[UnitSlice], pool: Optional[ThreadPoolExecutor]) -> Columns:
        """Read and transform a window's slices into one block (row groups read in parallel by the pool)."""
        tables = list(pool.map(self._read_table, win)) if pool is not None else [self._read_table(s) for s in win]
        n = sum(s.num_rows for s in win)
        out = self.transform.empty(n)
        lay = self.transform.layout
        parts: list[Columns] = []
        offset = 0
        for s, table in zip(win, tables):
            u = s.unit
            try:
                if isinstance(table, DataError):
                    raise table
                pos = None if self.has_row_id else np.arange(u.start + s.start, u.start + s.stop, dtype=np.int64)
                parts.append(self.transform.transform(table, u.file, u.row_group, positions=pos, out=out,
                                                      offset=offset))
            except DataError as e:
                self._skip_or_raise(e, s)
                pad = Columns.pad(s.num_rows, lay.n_dense, lay.n_single, lay.n_lists, lay.n_tasks)
                sl = slice(offset, offset + s.num_rows)
                out.dense[sl], out.ids[sl], out.labels[sl], out.row_ids[sl] = pad.dense, pad.ids, pad.labels, pad.row_ids
                parts.append(pad)  # same length: steps stay agreed across ranks
            offset += s.num_rows
        out.lists = concat_lists([p.lists for p in parts]) if parts else []
        return out

    def _produce(self, epoch: int, start_step: int) -> Iterator[tuple[int, CTRBatch]]:
        """Batches ``start_step .. S - 1`` of ``epoch``, each with its step index."""
        B = self.cfg.batch_size
        steps = len(self)
        step = start_step
        if step >= steps:
            return
        start_row = step * B
        pending: list[Columns] = []
        have = 0
        pool = ThreadPoolExecutor(self.cfg.num_workers) if self.cfg.num_workers > 1 else None
        try:
            pos = 0
            for w, win in enumerate(self.windows(epoch)):
                n = sum(s.num_rows for s in win)
                if pos + n <= start_row:
                    pos += n
                    continue
                block = self._read_window(win, pool)
                perm = (epoch_rng(self.seed, epoch, self.rank, w, _WINDOW_SALT).permutation(n)
                        if self.cfg.shuffle else None)
                i = max(0, start_row - pos)
                pos += n
                while i < n:
                    take = min(B - have, n - i)
                    pending.append(block.take(perm[i : i + take]) if perm is not None else block.slice(i, i + take))
                    have += take
                    i += take
                    if have == B:
                        yield step, self._finish(Columns.concat(pending))
                        pending, have = [], 0
                        step += 1
                        if step >= steps:
                            return
            # the rank's rows are exhausted: pad policy fills up to S batches
            while step < steps:
                if have < B:
                    pending.append(self._pad(B - have))
                yield step, self._finish(Columns.concat(pending))
                pending, have = [], 0
                step += 1
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _finish(self, cols: Columns) -> CTRBatch:
        batch = cols.to_batch(self.transform.layout)
        return batch.pin_memory() if self._pin else batch

    def __iter__(self) -> Iterator[CTRBatch]:
        epoch = self.epoch
        start = self._resume[1] if self._resume is not None and self._resume[0] == epoch else 0
        self._resume = None
        self._step = start
        gen = self._produce(epoch, start)
        if self.cfg.prefetch == 0:
            for step, batch in gen:
                self._step = step + 1
                yield batch
            return
        yield from self._prefetched(gen)

    def _prefetched(self, gen: Iterator[tuple[int, CTRBatch]]) -> Iterator[CTRBatch]:
        q: queue.Queue = queue.Queue(maxsize=self.cfg.prefetch)
        stop = threading.Event()

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def run() -> None:
            try:
                for item in gen:
                    if not put(item):
                        return
                put(_END)
            except BaseException as e:  # handed to the consumer, raised there
                put(_Failure(e))
            finally:
                gen.close()

        t = threading.Thread(target=run, name=f"dist_ctr-loader-rank{self.rank}", daemon=True)
        t.start()
        try:
            while True:
                item = q.get()
                if item is _END:
                    break
                if isinstance(item, _Failure):
                    raise item.exc
                step, batch = item
                self._step = step + 1
                yield batch
        finally:
            stop.set()
            while True:
                try:
                    q.get_nowait()
                except queue.Empty:
                    break
            t.join(timeout=10)

    def __repr__(self) -> str:
        return (f"ParquetLoader(url={self.cfg.url!r}, rank={self.rank}/{self.world_size}, epoch={self.epoch}, "
                f"steps={len(self)}, batch_size={self.cfg.batch_size})")


CTRDataLoader = ParquetLoader


def _agree(files: list[str], presence: Mapping[str, tuple[bool, bool]], i: int, column: str, what: str) -> bool:
    have = [f for f in files if presence.get(f, (False, False))[i]]
    if have and len(have) != len(files):
        lacking = next(f for f in files if not presence.get(f, (False, False))[i])
        raise SchemaMismatchError(f"{what} column missing here but present in {have[0]}", file=lacking, column=column)
    return bool(have)


def build_loader(schema: FeatureSchema, cfg: DataConfig | Mapping[str, Any], rank: int = 0, world_size: int = 1,
                 epoch: int = 0, seed: int = 0, device: Optional[torch.device] = None) -> ParquetLoader:
    """The engine's entry point: a :class:`ParquetLoader` for one rank.

    Args:
        schema (FeatureSchema): features and labels.
        cfg (DataConfig | Mapping): loader config (a mapping is parsed strictly).
        rank (int): this rank.
        world_size (int): number of ranks.
        epoch (int): first epoch to read.
        seed (int): shuffle seed (the same on all ranks).
        device (torch.device | None): training device (CUDA -> pinned batches).

    Returns:
        ParquetLoader: iterable of ``CTRBatch`` for one epoch, with ``set_epoch``, ``__len__``, ``state_dict``,
        ``load_state_dict`` and ``bad_files``.
    """
    if not isinstance(cfg, DataConfig):
        cfg = DataConfig.from_dict(cfg)
    return ParquetLoader(schema, cfg, rank=rank, world_size=world_size, epoch=epoch, seed=seed, device=device)
