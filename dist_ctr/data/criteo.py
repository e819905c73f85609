"""Criteo TSV -> Parquet shards, streaming with bounded memory.

Reads Criteo's click-log layout: one example per line, 40 tab-separated fields ``label, I1..I13, C1..C26``
(integer counts, then 8-char hex tokens; missing values are empty fields). Kaggle's ``train.txt`` and the 1TB
``day_0 .. day_23`` files share it; ``.gz`` inputs are decompressed on the fly. Files are read in blocks by
pyarrow's streaming CSV reader with explicit column names and types (no inference, no quoting), re-cut into
row groups of ``row_group_rows`` and written as ``part-NNNNN.parquet`` shards of ``rows_per_shard`` rows, so memory
stays around one block plus one row group whatever the input size.

Categoricals stay hex strings (``use_hash`` features; the loader hashes them) or, with ``hash_categoricals``, are
hashed on the way with :func:`dist_ctr.schema.stable_hash` modulo each feature's vocabulary (the Criteo-1TB
MLPerf cardinalities by default), giving ids identical to what the loader computes from the hex. A missing
categorical hashes as the empty string, as in the loader. Each output row gets a ``row_id`` (its position in the
concatenated inputs, from ``row_id_start``).

A line with the wrong number of fields stops the conversion with an error naming the file and line
(``bad_lines="error"``) or is skipped and counted (``bad_lines="skip"``).

Column layout written: ``row_id`` int64, ``label`` int8, ``I1..I13`` int64 (nullable), ``C1..C26`` string
(nullable) or int32 ids.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dist_ctr.data.errors import DataError, DataPathNotFoundError, StorageAccessError
from dist_ctr.data.presets import (
    CRITEO_1TB_MLPERF_CARDINALITIES,
    DENSE_NAMES,
    LABEL_NAME,
    SPARSE_NAMES,
    criteo_schema,
)
from dist_ctr.schema import stable_hash
from dist_ctr.strict import ConfigError

__all__ = ["CRITEO_COLUMNS", "ConvertReport", "convert_criteo", "convert_criteo_input", "criteo_read_options",
           "iter_criteo_batches"]

ROW_ID = "row_id"
CRITEO_COLUMNS: tuple[str, ...] = (LABEL_NAME, *DENSE_NAMES, *SPARSE_NAMES)
INFO_FILE = "_convert.json"
SCHEMA_FILE = "schema.yaml"


@dataclass
class ConvertReport:
    """What :func:`convert_criteo` (or ``convert_criteo_ray``) read and wrote.

    ``per_input`` holds one dict per input (or byte range of one): ``input``, ``rows``, ``bad_lines`` and, from the
    Ray converter, ``byte_range``, ``files`` (the shards it wrote) and ``seconds``.
    """

    inputs: list[str]
    out_url: str
    rows: int
    files: list[str]
    bytes: int
    seconds: float
    rows_per_s: float
    bad_lines: int
    bad_line_examples: list[str] = field(default_factory=list)
    positive_rate: float = float("nan")
    hashed: bool = False
    per_input: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        s = (f"converted {self.rows:,} rows from {len(self.inputs)} input(s) into {len(self.files)} file(s), "
             f"{self.bytes / 1e6:,.1f} MB, at {self.out_url} in {self.seconds:.1f}s ({self.rows_per_s:,.0f} rows/s); "
             f"positive rate {self.positive_rate:.4f}; "
             f"categoricals {'hashed to ids' if self.hashed else 'kept as hex'}")
        if self.bad_lines:
            s += f"; skipped {self.bad_lines:,} bad line(s), e.g. {self.bad_line_examples[0]}"
        return s


def criteo_read_options(block_size: int = 1 << 24, handler: Any = None) -> tuple[Any, Any, Any]:
    """pyarrow CSV options for Criteo TSV: names and types fixed, tab delimiter, no quoting, empty -> null.

    Returns:
        tuple: ``(ReadOptions, ParseOptions, ConvertOptions)``.

    >>> read, parse, conv = criteo_read_options()
    >>> read.column_names[:3], len(read.column_names), parse.delimiter == chr(9), str(conv.column_types["C1"])
    (['label', 'I1', 'I2'], 40, True, 'string')
    """
    types = {LABEL_NAME: pa.int8(), **{n: pa.int64() for n in DENSE_NAMES}, **{n: pa.string() for n in SPARSE_NAMES}}
    read = pacsv.ReadOptions(column_names=list(CRITEO_COLUMNS), block_size=block_size, use_threads=False)
    parse = pacsv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False, double_quote=False,
                               newlines_in_values=False, ignore_empty_lines=True, invalid_row_handler=handler)
    conv = pacsv.ConvertOptions(column_types=types, null_values=[""], strings_can_be_null=True,
                                include_columns=list(CRITEO_COLUMNS))
    return read, parse, conv


class _BadLines:
    """Counts wrong-width lines; under ``error`` remembers the first one for the message."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.count = 0
        self.examples: list[str] = []
        self.first: Optional[tuple[Optional[int], int, str]] = None
        self.file = ""

    def __call__(self, row: Any) -> str:
        self.count += 1
        if len(self.examples) < 5:
            self.examples.append(f"{self.file}: line {row.number}: {row.actual_columns} fields")
        if self.mode == "skip":
            return "skip"
        self.first = (row.number, row.actual_columns, row.text)
        return "error"


class _LineRange(io.RawIOBase):
    """Bytes of the lines that *start* in ``[start, end)`` of a seekable binary file (the byte range's lines).

    A line belongs to the range holding its first byte, so consecutive ranges split a file into whole lines with
    none lost or doubled.

    >>> raw = io.BytesIO(b"ab\\ncd\\nef\\n")
    >>> [_LineRange(raw, a, b).read() for a, b in [(0, 4), (4, 9)]]
    [b'ab\\ncd\\n', b'ef\\n']
    """

    def __init__(self, fh: Any, start: int, end: int) -> None:
        super().__init__()
        self.fh, self.end = fh, end
        if start > 0:
            fh.seek(start - 1)
            fh.readline()  # the rest of the line holding byte start-1 belongs to the range before
        else:
            fh.seek(0)
        self.pos = fh.tell()
        self.last = b"\n"
        self.done = self.pos >= end

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        if self.done or n == 0:
            return b""
        if self.pos < self.end:
            data = self.fh.read(min(n, self.end - self.pos))
            if data:
                self.pos += len(data)
                self.last = data[-1:]
                return data
        self.done = True  # at the range's end (or EOF): finish the line that started inside it
        return b"" if self.last == b"\n" else self.fh.readline()

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


def _open_input(url: str, storage_options: dict[str, Any],
                byte_range: Optional[tuple[int, int]] = None) -> tuple[Any, Any]:
    """A pyarrow input stream (gzip-decompressing for ``.gz``; only the lines of ``byte_range``) and the handle to
    close."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    if not fs.exists(path):
        raise DataPathNotFoundError("input file not found", file=url)
    if fs.isdir(path):
        raise DataError("is a directory; give the TSV files themselves", file=url)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    gz = path.endswith(".gz")
    if byte_range is not None:
        if gz:
            raise ValueError(f"{url}: a gzip file cannot be read by byte range")
        fh = fs.open(path, "rb")
        return pa.PythonFile(_LineRange(fh, *byte_range), mode="r"), fh
    if protocol in ("file", "local"):
        stream = pa.input_stream(path, compression="gzip" if gz else None)
        return stream, stream
    fh = fs.open(path, "rb")
    raw = pa.PythonFile(fh, mode="r")
    return (pa.CompressedInputStream(raw, "gzip") if gz else raw), fh


def iter_criteo_batches(url: str, storage_options: dict[str, Any] | None = None, bad_lines: str = "error",
                        block_size: int = 1 << 24, counter: Optional[_BadLines] = None,
                        byte_range: Optional[tuple[int, int]] = None,
                        label_only: bool = False) -> Iterator[pa.RecordBatch]:
    """Stream one Criteo TSV file (plain or ``.gz``) as Arrow record batches of the 40 typed columns.

    Args:
        url (str): path or fsspec URL.
        storage_options (dict | None): fsspec options (credentials, endpoint).
        bad_lines (str): "error" (raise :class:`DataError` naming file and line) or "skip" (count and drop).
        block_size (int): bytes of text parsed per batch.
        counter (_BadLines | None): counts wrong-width lines across calls.
        byte_range (tuple[int, int] | None): read only the lines starting in ``[start, end)`` (plain text only);
            line numbers in messages then count from the range's first line.
        label_only (bool): convert only ``label`` (every line is still split and checked): for counting rows.

    Yields:
        pa.RecordBatch: columns ``label, I1..I13, C1..C26`` (``label`` alone with ``label_only``).
    """
    if bad_lines not in ("error", "skip"):
        raise ValueError(f"bad_lines must be 'error' or 'skip', got {bad_lines!r}")
    bad = counter if counter is not None else _BadLines(bad_lines)
    where = url if byte_range is None else f"{url} (bytes {byte_range[0]}-{byte_range[1]})"
    bad.file = where
    bad.first = None
    stream, handle = _open_input(url, storage_options or {}, byte_range)
    read, parse, conv = criteo_read_options(block_size, bad)
    if label_only:
        conv.include_columns = [LABEL_NAME]
    try:
        try:
            reader = pacsv.open_csv(stream, read_options=read, parse_options=parse, convert_options=conv)
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                yield batch
        except pa.ArrowInvalid as e:
            if bad.first is not None:
                line, got, text = bad.first
                shown = text if len(text) <= 120 else text[:117] + "..."
                hint = " (Kaggle's test.txt has no label column and cannot be converted)" if got == 39 else ""
                raise DataError(f"line {line}: expected {len(CRITEO_COLUMNS)} tab-separated fields (label, I1..I13, "
                                f"C1..C26), got {got}: {shown!r}{hint}; bad_lines='skip' drops such lines",
                                file=where) from None
            raise DataError(f"not Criteo TSV: {e}", file=where) from None
        except (OSError, EOFError) as e:  # truncated / corrupt gzip
            raise DataError(f"cannot read: {e}", file=where) from None
    finally:
        handle.close()


class _ShardWriter:
    """Re-cuts incoming tables into row groups of ``row_group_rows`` and files ``<prefix>NNNNN.parquet`` of
    ``rows_per_shard`` rows."""

    def __init__(self, fs: Any, root: str, rows_per_shard: int, row_group_rows: int, compression: str,
                 prefix: str = "part-") -> None:
        self.fs, self.root, self.prefix = fs, root, prefix
        self.rows_per_shard, self.row_group_rows, self.compression = rows_per_shard, row_group_rows, compression
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.files: list[str] = []
        self.bytes = 0
        self._fh: Any = None
        self._writer: Optional[pq.ParquetWriter] = None
        self._in_shard = 0

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.pending_rows += table.num_rows
        while self.pending_rows >= self._need():
            self._flush(self._need())

    def _need(self) -> int:
        return min(self.row_group_rows, self.rows_per_shard - self._in_shard)

    def _flush(self, n: int) -> None:
        tab = pa.concat_tables(self.pending) if len(self.pending) > 1 else self.pending[0]
        head, rest = tab.slice(0, n), tab.slice(n)
        self.pending = [rest] if rest.num_rows else []
        self.pending_rows = rest.num_rows
        if self._writer is None:
            rel = f"{self.prefix}{len(self.files):05d}.parquet"
            self.files.append(rel)
            try:
                self._fh = self.fs.open(f"{self.root}/{rel}", "wb")
            except OSError as e:
                raise StorageAccessError(f"cannot write: {e}", file=f"{self.root}/{rel}") from None
            self._writer = pq.ParquetWriter(self._fh, head.schema, compression=self.compression,
                                            write_statistics=[ROW_ID])
        self._writer.write_table(head.combine_chunks(), row_group_size=n)
        self._in_shard += n
        if self._in_shard >= self.rows_per_shard:
            self._close_shard()

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._fh.close()
            self.bytes += self.fs.size(f"{self.root}/{self.files[-1]}")
        self._writer, self._fh, self._in_shard = None, None, 0

    def close(self) -> None:
        while self.pending_rows:
            self._flush(min(self._need(), self.pending_rows))
        self._close_shard()


def _check_options(rows_per_shard: int, row_group_rows: int, bad_lines: str,
                   vocab_sizes: Sequence[int] | None) -> list[int]:
    """Validates the converter's options; returns the 26 vocabularies (the MLPerf ones by default)."""
    if rows_per_shard < 1 or row_group_rows < 1:
        raise ConfigError(f"rows_per_shard and row_group_rows must be >= 1, got {rows_per_shard}, {row_group_rows}")
    if bad_lines not in ("error", "skip"):
        raise ConfigError(f"bad_lines must be 'error' or 'skip', got {bad_lines!r}")
    vocab = list(vocab_sizes) if vocab_sizes is not None else list(CRITEO_1TB_MLPERF_CARDINALITIES)
    if len(vocab) != len(SPARSE_NAMES) or min(vocab) < 1:
        raise ConfigError(f"vocab_sizes needs {len(SPARSE_NAMES)} positive sizes (C1..C26), got {len(vocab)}")
    return vocab


def _prepare_out(out_url: str, storage_options: dict[str, Any], overwrite: bool) -> tuple[Any, str]:
    """``(fs, root)`` of the output directory, created; refuses a non-empty one unless ``overwrite``."""
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(out_url, **storage_options)
        root = root.rstrip("/")
        busy = fs.exists(root) and bool(fs.find(root))
        if busy and not overwrite:
            raise ConfigError(f"{out_url} is not empty; pass overwrite=True (--overwrite) to write into it")
        fs.makedirs(root, exist_ok=True)
    except (OSError, ImportError) as e:
        raise StorageAccessError(f"cannot use the output directory: {e}", file=out_url) from None
    return fs, root


def convert_criteo_input(url: str, writer: _ShardWriter, *, storage_options: dict[str, Any] | None = None,
                         bad_lines: str = "error", block_size: int = 1 << 24, hash_categoricals: bool = False,
                         vocab: Sequence[int] = CRITEO_1TB_MLPERF_CARDINALITIES, row_id_start: int = 0,
                         counter: Optional[_BadLines] = None,
                         byte_range: Optional[tuple[int, int]] = None) -> tuple[int, int]:
    """Convert one input file (or the lines of one byte range of it) into ``writer``'s shards.

    Both :func:`convert_criteo` (all inputs into one writer) and :func:`dist_ctr.launch.ray_convert.convert_criteo_ray`
    (one writer per input or range, in parallel) write their rows through this function.

    Args:
        url (str): path or fsspec URL of a Criteo TSV (plain or ``.gz``).
        writer (_ShardWriter): where the rows go (``writer.close()`` is the caller's).
        storage_options (dict | None): fsspec options of the input.
        bad_lines (str): "error" or "skip".
        block_size (int): bytes of text parsed at once.
        hash_categoricals (bool): write ``stable_hash`` ids instead of hex strings.
        vocab (Sequence[int]): 26 vocabularies for hashing.
        row_id_start (int): ``row_id`` of this input's first row.
        counter (_BadLines | None): bad-line counter (shared across inputs by :func:`convert_criteo`).
        byte_range (tuple[int, int] | None): only the lines starting in ``[start, end)``.

    Returns:
        tuple[int, int]: rows written and positives among them.
    """
    id_type = pa.int32() if max(vocab) < 2**31 else pa.int64()
    next_id, positives = row_id_start, 0
    for batch in iter_criteo_batches(url, storage_options, bad_lines, block_size, counter=counter,
                                     byte_range=byte_range):
        n = batch.num_rows
        if n == 0:
            continue
        cols: list[pa.Array] = [pa.array(np.arange(next_id, next_id + n, dtype=np.int64))]
        cols += [batch.column(i) for i in range(1 + len(DENSE_NAMES))]
        for j, name in enumerate(SPARSE_NAMES):
            col = batch.column(1 + len(DENSE_NAMES) + j)
            cols.append(pa.array(stable_hash(col, vocab[j]), type=id_type) if hash_categoricals else col)
        writer.add(pa.Table.from_arrays(cols, names=[ROW_ID, *CRITEO_COLUMNS]))
        positives += int(pc.sum(batch.column(0)).as_py() or 0)  # host sync (arrow scalar)
        next_id += n
    return next_id - row_id_start, positives


def _write_info(fs: Any, root: str, rep: ConvertReport, vocab: list[int], converter: str,
                **extra: Any) -> None:
    """``schema.yaml`` and ``_convert.json`` next to the shards."""
    schema = criteo_schema(vocab, use_hash=not rep.hashed)
    try:
        with fs.open(f"{root}/{SCHEMA_FILE}", "w") as fh:
            fh.write(schema.to_yaml())
        with fs.open(f"{root}/{INFO_FILE}", "w") as fh:
            fh.write(json.dumps({"converter": converter, "inputs": rep.inputs, "rows": rep.rows,
                                 "files": rep.files, "bytes": rep.bytes, "bad_lines": rep.bad_lines,
                                 "bad_line_examples": rep.bad_line_examples, "hash_categoricals": rep.hashed,
                                 "vocab_sizes": vocab, "per_input": rep.per_input, **extra}, indent=2))
    except OSError as e:
        raise StorageAccessError(f"cannot write: {e}", file=f"{root}/{INFO_FILE}") from None


def convert_criteo(inputs: Sequence[str] | str, out_url: str, rows_per_shard: int = 2_000_000,
                   row_group_rows: int = 131_072, hash_categoricals: bool = False,
                   vocab_sizes: Sequence[int] | None = None, storage_options: dict[str, Any] | None = None,
                   bad_lines: str = "error", row_id_start: int = 0, compression: str = "snappy",
                   block_size: int = 1 << 24, overwrite: bool = False, verbose: bool = False) -> ConvertReport:
    """Convert Criteo TSV files (plain or ``.gz``) to Parquet shards under ``out_url``.

    Args:
        inputs (Sequence[str] | str): TSV paths / URLs, read in the given order.
        out_url (str): output directory URL (local, ``s3://``, ``memory://`` ...).
        rows_per_shard (int): rows per output file (the last one may hold fewer).
        row_group_rows (int): rows per Parquet row group.
        hash_categoricals (bool): write ``stable_hash(hex, vocab) `` ids (int32) instead of hex strings.
        vocab_sizes (Sequence[int] | None): 26 vocabularies for hashing (default: the MLPerf Criteo-1TB ones).
        storage_options (dict | None): fsspec options for inputs and output; never written or printed.
        bad_lines (str): "error" or "skip" (see module docstring).
        row_id_start (int): ``row_id`` of the first row.
        compression (str): Parquet codec.
        block_size (int): bytes of text parsed at once (bounds memory with ``row_group_rows``).
        overwrite (bool): write into a non-empty ``out_url``.
        verbose (bool): print one line per input.

    Returns:
        ConvertReport

    Raises:
        DataError: a wrong-width line (``bad_lines="error"``), an unparsable value or a missing input; the message
            names the file (and line).
        ConfigError: bad options or a non-empty ``out_url`` without ``overwrite``.
        StorageAccessError: the output cannot be created or written.
    """
    if isinstance(inputs, str):
        inputs = [inputs]
    inputs = [str(x) for x in inputs]
    if not inputs:
        raise ConfigError("convert_criteo: no input files given")
    vocab = _check_options(rows_per_shard, row_group_rows, bad_lines, vocab_sizes)
    so = storage_options or {}
    fs, root = _prepare_out(out_url, so, overwrite)

    t0 = time.perf_counter()
    writer = _ShardWriter(fs, root, rows_per_shard, row_group_rows, compression)
    bad = _BadLines(bad_lines)
    next_id = row_id_start
    positives = 0
    per_input: list[dict[str, Any]] = []
    for url in inputs:
        bad_before = bad.count
        n_in, pos = convert_criteo_input(url, writer, storage_options=so, bad_lines=bad_lines, block_size=block_size,
                                         hash_categoricals=hash_categoricals, vocab=vocab, row_id_start=next_id,
                                         counter=bad)
        next_id += n_in
        positives += pos
        per_input.append({"input": url, "rows": n_in, "bad_lines": bad.count - bad_before})
        if verbose:
            print(f"[convert-criteo] {url}: {n_in:,} rows", flush=True)
    writer.close()
    rows = next_id - row_id_start
    dt = time.perf_counter() - t0
    rep = ConvertReport(inputs=list(inputs), out_url=out_url, rows=rows, files=writer.files, bytes=writer.bytes,
                        seconds=dt, rows_per_s=rows / max(dt, 1e-9), bad_lines=bad.count,
                        bad_line_examples=bad.examples, positive_rate=positives / rows if rows else float("nan"),
                        hashed=hash_categoricals, per_input=per_input)
    _write_info(fs, root, rep, vocab, "dist_ctr.data.criteo", row_id_start=row_id_start,
                rows_per_shard=rows_per_shard, row_group_rows=row_group_rows)
    return rep
