"""A background thread that runs a batch generator ahead of its consumer, through a bounded queue.

An exception raised by the generator is handed to the consumer and raised there (with its own traceback); when
the consumer stops early, the thread is told to stop and the queue is drained.

>>> seen = []
>>> list(prefetched(iter([(0, "a"), (1, "b")]), 2, "doc", seen.append))
['a', 'b']
>>> seen
[1, 2]
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator, TypeVar

__all__ = ["prefetched"]

T = TypeVar("T")
_END = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetched(gen: Iterator[tuple[int, T]], depth: int, name: str,
               on_step: Callable[[int], None]) -> Iterator[T]:
    """Yield the items of ``gen`` (``(step, item)`` pairs) prepared up to ``depth`` ahead by a thread named
    ``name``; ``on_step(step + 1)`` is called right before each item is handed out (the consumer's cursor)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
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

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                break
            if isinstance(item, _Failure):
                raise item.exc
            step, batch = item
            on_step(step + 1)
            yield batch
    finally:
        stop.set()
        while True:
            try:
                q.get_nowait()
            except queue.Empty:
                break
        t.join(timeout=10)
