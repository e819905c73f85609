"""Hive partitions (``key=value/``) under any fsspec URL, their completeness, and a run's window.

A partition counts as complete when its ``_SUCCESS`` marker exists (what Spark, Hive and the synthetic generator
write last). Values are compared as strings, so ISO dates (``2026-11-30``) order correctly.

>>> import fsspec
>>> fs = fsspec.filesystem("memory")
>>> for d in ("2026-11-01", "2026-11-02", "2026-11-03"):
...     fs.pipe(f"/lake/date={d}/part-0.parquet", b"x")
>>> fs.pipe("/lake/date=2026-11-01/_SUCCESS", b""); fs.pipe("/lake/date=2026-11-02/_SUCCESS", b"")
>>> [(p.value, p.complete) for p in list_partitions("memory:///lake")]
[('2026-11-01', True), ('2026-11-02', True), ('2026-11-03', False)]
>>> w = choose_window(list_partitions("memory:///lake"), as_of="2026-11-03", after=None)
>>> w.train, w.eval
(['2026-11-01'], '2026-11-02')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import fsspec

from dist_ctr.errors import PipelineError
from dist_ctr.storage import storage_errors

__all__ = ["Partition", "Window", "choose_window", "list_partitions", "SUCCESS"]

SUCCESS = "_SUCCESS"


@dataclass(frozen=True)
class Partition:
    """One ``key=value`` directory: its value, URL and whether ``_SUCCESS`` exists."""

    value: str
    url: str
    complete: bool


@dataclass
class Window:
    """What one run trains on and evaluates on (partition values), and what it passed over."""

    train: list[str]
    eval: str
    skipped: list[str] = field(default_factory=list)

    def describe(self, key: str = "date") -> str:
        """``date=2026-11-02..2026-11-04 (3)``."""
        if not self.train:
            return "(empty)"
        span = self.train[0] if len(self.train) == 1 else f"{self.train[0]}..{self.train[-1]}"
        return f"{key}={span} ({len(self.train)})"


def list_partitions(root: str, key: str = "date", storage_options: Optional[dict[str, Any]] = None) -> list[Partition]:
    """The ``key=value`` directories directly under ``root``, sorted by value.

    Raises:
        PipelineError: ``root`` does not exist.
        StorageError: the store refused the listing (endpoint, bucket, credentials).
    """
    fs, path = fsspec.core.url_to_fs(root, **(storage_options or {}))
    path = path.rstrip("/")
    with storage_errors(root, "list the data root"):
        if not fs.exists(path):
            raise PipelineError(f"data root not found: {root}")
        entries = fs.ls(path, detail=True)
    out = []
    prefix = f"{key}="
    for e in entries:
        name = str(e["name"]).rstrip("/").rsplit("/", 1)[-1]
        if e.get("type") != "directory" or not name.startswith(prefix):
            continue
        url = f"{root.rstrip('/')}/{name}"
        with storage_errors(root, "list the data root"):
            done = fs.exists(f"{path}/{name}/{SUCCESS}")
        out.append(Partition(name[len(prefix):], url, bool(done)))
    return sorted(out, key=lambda p: p.value)


def choose_window(parts: list[Partition], as_of: str, after: Optional[str], mode: str = "since_parent",
                  last_n: int = 1, eval_partition: str = "newest_complete", key: str = "date") -> Window:
    """The training window and evaluation partition of a run for ``as_of``.

    Args:
        parts (list[Partition]): every partition under the data root.
        as_of (str): partitions after it are not considered.
        after (str | None): ``since_parent``: the last value already trained (None: no parent, train on every
            complete partition before the evaluation one).
        mode (str): ``since_parent`` or ``last_n``.
        last_n (int): partitions of a ``last_n`` window.
        eval_partition (str): ``newest_complete`` (the newest complete partition up to ``as_of``, held out of
            training) or an explicit value.
        key (str): partition key (for messages).

    Raises:
        PipelineError: the evaluation partition is missing or incomplete, or the window is empty.
    """
    seen = [p for p in parts if p.value <= as_of]
    by_value = {p.value: p for p in seen}
    if eval_partition == "newest_complete":
        done = [p for p in seen if p.complete]
        if not done:
            raise PipelineError(f"no complete partition ({key}=... with {SUCCESS}) up to {as_of}; nothing to "
                                "evaluate on")
        ev = done[-1].value
    else:
        ev = str(eval_partition)
        if ev not in by_value:
            raise PipelineError(f"evaluation partition {key}={ev} does not exist (as of {as_of})")
        if not by_value[ev].complete:
            raise PipelineError(f"evaluation partition {by_value[ev].url} is incomplete (no {SUCCESS} marker)")
    before = [p for p in seen if p.value < ev]
    skipped = [f"{p.url} (incomplete: no {SUCCESS})" for p in before if not p.complete]
    ready = [p.value for p in before if p.complete]
    if mode == "last_n":
        train = ready[-last_n:]
    else:
        train = [v for v in ready if after is None or v > after]
    if not train:
        since = f" after {key}={after}" if after else ""
        raise PipelineError(f"empty training window: no complete partition{since} before the evaluation partition "
                            f"{key}={ev}")
    return Window(train, ev, skipped)
