"""``ParquetLoader``: one rank's stream of ``CTRBatch`` over a Parquet data set, resumable mid-epoch, exactly once.

Notation: ``B`` batch size, ``W`` world size, ``S`` steps per epoch (the same on every rank).

How one epoch is read (everything is a pure function of listing, seed, epoch and the epoch's *base* world size):

1. :class:`~dist_ctr.data.assignment.ShardAssignment` orders the row groups for the epoch and gives rank ``r``
   its share of rows (ranks differ by at most one row).
2. The rank's row slices are grouped, in order, into **shuffle windows** of whole slices holding at least
   ``shuffle_buffer_rows`` rows (the last window may be smaller). Window ``w`` is read (row groups in parallel
   by ``num_workers`` threads), transformed column-wise, and its rows are visited in the order of a permutation
   drawn from ``(seed, epoch, rank, w)`` (identity without ``shuffle``).
3. The concatenation of rank ``r``'s permuted windows is **base stream** ``r``. A position in the epoch is a list
   of :class:`~dist_ctr.data.assignment.Segment` ``(base_rank, start, stop)``: rows ``[start, stop)`` of base
   stream ``base_rank``. A rank's **reading plan** for the epoch is such a list; normally it is one segment,
   ``(r, 0, rank_rows)`` under base world size ``W``.
4. Batch ``k`` is rows ``[k B, (k+1) B)`` of the concatenation of the plan's segments. With
   ``tail_policy="pad"`` the plan is padded to ``S B`` rows with pad rows (``row_ids == -1``, weight 0 in the
   task); with ``"drop"`` it is cut at ``S B`` rows. ``S`` is agreed by all ranks: ``ceil(max rows / B)`` (pad) or
   ``floor(min rows / B)`` (drop) over the ranks' plans.

The cursor (:meth:`ParquetLoader.state_dict`) is ``(epoch, step)`` plus the plan and this rank's **remaining
segments**: the plan's rows ``[step B, min(S B, plan rows))`` not handed out yet, in base-stream coordinates.

- Same world size (:meth:`~ParquetLoader.load_state_dict`): the plan and step are restored; the next iteration
  re-derives the windows, reads the window holding row ``step B`` and continues -- exactly the rows not yet
  consumed, in the same order.
- Another world size ``W'`` (:meth:`~ParquetLoader.load_global_state`, given every saved rank's cursor): the
  saved ranks' remaining segments, concatenated in rank order, are split into ``W'`` contiguous parts balanced by
  rows (parts differ by at most one row); rank ``r'`` keeps part ``r'`` as its plan for the rest of the epoch,
  whose step counter restarts at 0 (``len(loader)`` is then the steps of that rest). Segments stay in the
  coordinates of the epoch's base streams, so a second resume in the same epoch (``W -> W' -> W''``) works the
  same way. The next epoch is a normal one under ``W'``. Under ``"drop"`` the rows a resumed epoch reads are a
  subset of the rows the uninterrupted epoch would have read: each new rank's part is again cut at ``S' B``.

Reading a segment reads the base rank's windows that overlap it; a background thread prepares up to
``prefetch`` batches (bounded queue); memory is bounded by one window plus the queue, whatever the data set's size.

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

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch

from dist_ctr.data.assignment import Segment, ShardAssignment, UnitSlice, epoch_rng, segment_rows, split_rows, take_rows
from dist_ctr.data.batch import CTRBatch
from dist_ctr.data.config import DataConfig
from dist_ctr.data.errors import BadFileReport, DataError, SchemaMismatchError, StorageAccessError
from dist_ctr.data.prefetch import prefetched
from dist_ctr.data.reports import data_report
from dist_ctr.data.source import ParquetSource
from dist_ctr.data.transforms import Columns, TableTransform, concat_lists, load_vocabulary
from dist_ctr.schema import FeatureSchema

__all__ = ["ParquetLoader", "CTRDataLoader", "build_loader"]

_WINDOW_SALT = 0x57A7E
_STATE_VERSION = 2  # 2 added base_world_size, plan, steps, segments; version 1 cursors still load


@dataclass(frozen=True)
class _Plan:
    """A rank's reading plan for one epoch: the rows it reads are the concatenation of ``segments``, in the
    coordinates of the base streams of ``base_world_size`` ranks; ``steps`` is agreed by all ranks."""

    epoch: int
    base_world_size: int
    segments: tuple[Segment, ...]
    steps: int


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
                                        labels_present=has_labels, on_non_finite=cfg.on_non_finite)
        self.filled = self.transform.filled  # non-finite dense values replaced under on_non_finite: fill
        self.columns = self.transform.columns
        self.assignment = ShardAssignment(units, world_size, cfg.num_workers, seed, cfg.shuffle)
        self._fingerprint = self.source.fingerprint()
        self._pin = device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available()
        self._step = 0
        self._resume: Optional[tuple[int, int]] = None
        self._plan: Optional[_Plan] = None  # set by a resume on another world size; None: the default plan
        self._assignments: dict[int, ShardAssignment] = {world_size: self.assignment}

    def report(self) -> dict[str, Any]:
        """What this loader skipped (``on_bad_file: skip``) or filled (``on_non_finite: fill``) so far, as a
        plain dict (see :mod:`dist_ctr.data.reports`)."""
        return data_report(self.bad_files, self.filled)

    # ---- epoch / length -----------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next iteration reads (a pending resume or plan for another epoch is dropped)."""
        if self._resume is not None and self._resume[0] != epoch:
            self._resume = None
        if self._plan is not None and self._plan.epoch != epoch:
            self._plan = None
        self.epoch = epoch
        self._step = 0 if self._resume is None else self._resume[1]

    def __len__(self) -> int:
        """Steps of the current epoch, equal on all ranks (see ``DataConfig.tail_policy``).

        After :meth:`load_global_state` (another world size) it is the steps of the rest of the resumed epoch.
        """
        if self._plan is not None and self._plan.epoch == self.epoch:
            return self._plan.steps
        return self.assignment.steps_per_epoch(self.cfg.batch_size, self.cfg.tail_policy)

    @property
    def rank_rows(self) -> int:
        """Rows of the data set this rank reads per (normal) epoch (before pad / drop)."""
        return self.assignment.rank_rows(self.rank)

    def _assignment_for(self, world_size: int) -> ShardAssignment:
        """The row assignment of the listing under ``world_size`` ranks (base streams of a resumed epoch)."""
        if world_size not in self._assignments:
            self._assignments[world_size] = ShardAssignment(self.assignment.units, world_size, self.cfg.num_workers,
                                                            self.seed, self.cfg.shuffle)
        return self._assignments[world_size]

    def _current_plan(self) -> _Plan:
        """The plan of ``self.epoch``: the resumed one if set, else ``(rank, 0, rank_rows)`` under ``W``."""
        if self._plan is not None and self._plan.epoch == self.epoch:
            return self._plan
        return _Plan(self.epoch, self.world_size, (Segment(self.rank, 0, self.rank_rows),), len(self))

    # ---- cursor -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The cursor after the last batch handed out: JSON-able, resumable in another process.

        ``segments`` are this rank's remaining rows of the epoch as ``[base_rank, start, stop]`` of the base
        streams of ``base_world_size`` ranks; ``plan`` is the rank's whole plan for the epoch (``None`` for the
        default one) and ``steps`` its step count.
        """
        plan = self._current_plan()
        B = self.cfg.batch_size
        remaining = take_rows(plan.segments, self._step * B, plan.steps * B)
        return {
            "version": _STATE_VERSION,
            "epoch": int(self.epoch),
            "step": int(self._step),
            "rows_consumed": int(self._step) * B,
            "rank": self.rank,
            "world_size": self.world_size,
            "seed": self.seed,
            "batch_size": B,
            "shuffle": self.cfg.shuffle,
            "shuffle_buffer_rows": self.cfg.shuffle_buffer_rows,
            "tail_policy": self.cfg.tail_policy,
            "fingerprint": self._fingerprint,
            "base_world_size": int(plan.base_world_size),
            "plan": None if plan is not self._plan else [[int(v) for v in seg] for seg in plan.segments],
            "steps": int(plan.steps),
            "segments": [[int(v) for v in seg] for seg in remaining],
        }

    def _check(self, state: Mapping[str, Any], keys: Sequence[str], who: str) -> None:
        """Raise ``DataError`` naming the first of ``keys`` that is missing or differs from this loader's."""
        mine = self.state_dict()
        if "version" not in state:
            raise DataError(f"{who} has no 'version'; not a ParquetLoader cursor", file=self.cfg.url)
        if state["version"] not in (1, _STATE_VERSION):
            raise DataError(f"cannot resume: {who} has version {state['version']!r}, this loader reads 1 and "
                            f"{_STATE_VERSION}", file=self.cfg.url)
        for key in keys:
            if key not in state:
                raise DataError(f"{who} has no {key!r}; not a ParquetLoader cursor", file=self.cfg.url)
            if state[key] != mine[key]:
                what = "the data set's listing changed" if key == "fingerprint" else f"{key} differs"
                raise DataError(f"cannot resume: {what} (saved {state[key]!r}, now {mine[key]!r})", file=self.cfg.url)

    def _segments_of(self, state: Mapping[str, Any], key: str, base_world: int, who: str) -> tuple[Segment, ...]:
        """``state[key]`` as segments, each checked to lie inside its base stream."""
        assignment = self._assignment_for(base_world)
        out = []
        for seg in state[key]:
            r, a, b = (int(v) for v in seg)
            if not (0 <= r < base_world and 0 <= a <= b <= assignment.rank_rows(r)):
                raise DataError(f"cannot resume: {who} {key} holds {list(seg)!r}, outside the base streams of "
                                f"{base_world} ranks over this listing", file=self.cfg.url)
            out.append(Segment(r, a, b))
        return tuple(out)

    def _remaining_of(self, state: Mapping[str, Any], who: str) -> tuple[int, tuple[Segment, ...]]:
        """(base world size, remaining segments) of a saved cursor (a version-1 cursor read the default plan)."""
        if "segments" in state:
            base = int(state["base_world_size"])
            return base, self._segments_of(state, "segments", base, who)
        W, r, B = int(state["world_size"]), int(state["rank"]), int(state["batch_size"])
        a = self._assignment_for(W)
        steps = a.steps_per_epoch(B, self.cfg.tail_policy)
        return W, tuple(take_rows([Segment(r, 0, a.rank_rows(r))], int(state["step"]) * B, steps * B))

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume on the same world size: the next iteration yields exactly the batches after ``state['step']`` of
        ``state['epoch']`` (of the saved plan when the cursor comes from a resume on another world size).

        Raises ``DataError`` naming the first setting that differs from the one the cursor was saved under.
        """
        self._check(state, ("rank", "world_size", "seed", "batch_size", "shuffle", "shuffle_buffer_rows",
                            "tail_policy", "fingerprint"), "loader state")
        epoch = int(state["epoch"])
        self._plan = None
        if state.get("plan") is not None:
            base = int(state["base_world_size"])
            self._plan = _Plan(epoch, base, self._segments_of(state, "plan", base, "loader state"),
                               int(state["steps"]))
        self.epoch = epoch
        self._step = int(state["step"])
        self._resume = (self.epoch, self._step)

    def load_global_state(self, states: Sequence[Mapping[str, Any]]) -> None:
        """Resume mid-epoch from the cursors of a run on another world size: ``states`` holds EVERY saved rank's
        :meth:`state_dict`, in rank order.

        The saved ranks' remaining segments, concatenated in rank order, are split into ``W`` contiguous parts
        balanced by rows; this rank reads part ``rank`` as the rest of the saved epoch (step counter from 0,
        ``len(self)`` its steps), so the new ranks together read every remaining row exactly once (``"drop"``:
        the rows of each part past its last full batch are not read). The batch size may differ from the saved
        one (rows, not batches, are resumed); seed, shuffle, ``shuffle_buffer_rows``, ``tail_policy`` and the
        listing must be the same, else ``DataError`` names the setting.
        """
        if not states:
            raise DataError("cannot resume: no saved loader cursors were given", file=self.cfg.url)
        n_saved = len(states)
        base_world, epoch = -1, -1
        combined: list[Segment] = []
        for i, state in enumerate(states):
            who = f"loader cursor of saved rank {i}"
            if not state:
                raise DataError(f"cannot resume: saved rank {i} left no loader cursor", file=self.cfg.url)
            self._check(state, ("seed", "shuffle", "shuffle_buffer_rows", "tail_policy", "fingerprint"), who)
            if int(state.get("rank", -1)) != i or int(state.get("world_size", -1)) != n_saved:
                raise DataError(f"cannot resume: {who} says rank {state.get('rank')!r} of world_size "
                                f"{state.get('world_size')!r}; expected rank {i} of {n_saved} (one cursor per saved "
                                "rank, rank order)", file=self.cfg.url)
            base, segments = self._remaining_of(state, who)
            if i == 0:
                base_world, epoch = base, int(state["epoch"])
            elif (base, int(state["epoch"])) != (base_world, epoch):
                raise DataError(f"cannot resume: {who} is at epoch {state['epoch']} over {base} base streams, rank 0 "
                                f"at epoch {epoch} over {base_world}", file=self.cfg.url)
            combined.extend(segments)
        parts = split_rows(combined, self.world_size)
        rows = [segment_rows(p) for p in parts]
        B = self.cfg.batch_size
        steps = -(-max(rows) // B) if self.cfg.tail_policy == "pad" else min(rows) // B
        self._plan = _Plan(epoch, base_world, tuple(parts[self.rank]), steps)
        self.epoch = epoch
        self._step = 0
        self._resume = (epoch, 0)

    # ---- reading ------------------------------------------------------------------------------------------
    def windows(self, epoch: int, rank: Optional[int] = None, world_size: Optional[int] = None
                ) -> list[list[UnitSlice]]:
        """Shuffle windows of ``rank`` (default: this rank) under ``world_size`` ranks (default: ``W``) for
        ``epoch``: consecutive slices of at least ``shuffle_buffer_rows`` rows."""
        assignment = self._assignment_for(self.world_size if world_size is None else world_size)
        out: list[list[UnitSlice]] = []
        cur: list[UnitSlice] = []
        rows = 0
        for s in assignment.rank_slices(self.rank if rank is None else rank, epoch):
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

    def _pieces(self, epoch: int, base_world: int, segments: Sequence[Segment], pool: Optional[ThreadPoolExecutor]
                ) -> Iterator[tuple[Columns, Optional[np.ndarray], int, int]]:
        """The rows of ``segments`` in order, as ``(block, perm, i, j)``: rows ``perm[i:j]`` of a window's block
        (``block[i:j]`` when ``perm`` is None). One window is held at a time (reused when the next segment starts
        in it)."""
        held: Optional[tuple[int, int, Columns, Optional[np.ndarray]]] = None  # (base rank, window, block, perm)
        for seg in segments:
            pos = 0
            for w, win in enumerate(self.windows(epoch, seg.rank, base_world)):
                n = sum(s.num_rows for s in win)
                lo, hi = max(seg.start, pos), min(seg.stop, pos + n)
                if lo < hi:
                    if held is None or held[:2] != (seg.rank, w):
                        held = None  # release the previous window before reading the next one
                        perm = (epoch_rng(self.seed, epoch, seg.rank, w, _WINDOW_SALT).permutation(n)
                                if self.cfg.shuffle else None)
                        held = (seg.rank, w, self._read_window(win, pool), perm)
                    yield held[2], held[3], lo - pos, hi - pos
                pos += n
                if pos >= seg.stop:
                    break

    def _produce(self, plan: _Plan, start_step: int) -> Iterator[tuple[int, CTRBatch]]:
        """Batches ``start_step .. S - 1`` of a plan, each with its step index."""
        B = self.cfg.batch_size
        epoch, steps = plan.epoch, plan.steps
        step = start_step
        if step >= steps:
            return
        segments = take_rows(plan.segments, step * B, steps * B)
        pending: list[Columns] = []
        have = 0
        pool = ThreadPoolExecutor(self.cfg.num_workers) if self.cfg.num_workers > 1 else None
        try:
            for block, perm, i, j in self._pieces(epoch, plan.base_world_size, segments, pool):
                while i < j:
                    take = min(B - have, j - i)
                    pending.append(block.take(perm[i : i + take]) if perm is not None else block.slice(i, i + take))
                    have += take
                    i += take
                    if have == B:
                        yield step, self._finish(Columns.concat(pending))
                        pending, have = [], 0
                        step += 1
                        if step >= steps:
                            return
            # the plan's rows are exhausted: pad policy fills up to S batches
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
        gen = self._produce(self._current_plan(), start)
        if self.cfg.prefetch == 0:
            for step, batch in gen:
                self._step = step + 1
                yield batch
            return
        yield from prefetched(gen, self.cfg.prefetch, f"dist_ctr-loader-rank{self.rank}", self._set_step)

    def _set_step(self, step: int) -> None:
        self._step = step

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
