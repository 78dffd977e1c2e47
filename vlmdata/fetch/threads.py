"""Run a function over items in a few threads, hand each result to the caller's thread as it comes.

Items are taken from the iterable as threads get free (a URL list's chunks are read as they are
needed, never all at once). Ctrl-C in the caller's thread sets ``cancel`` (every download stops at
its next read, keeping its ``.part``), waits a little for the threads, and raises KeyboardInterrupt.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")
R = TypeVar("R")
_EXITED = object()  # a worker thread's last word


def run_in_threads(items: Iterable[T], fn: Callable[[T], R], jobs: int, cancel: threading.Event,
                   on_result: Callable[[R], None], *, name: str = "vlmdata-fetch") -> None:
    """``on_result(fn(item))`` for every item, ``jobs`` at a time; an error raised by ``items`` itself
    (a list that turns out broken) is raised here once the threads have stopped."""
    it = iter(items)
    take = threading.Lock()
    done: queue.Queue = queue.Queue()
    broken: list[BaseException] = []

    def worker() -> None:
        try:
            while not cancel.is_set():
                with take:
                    if broken:
                        return
                    try:
                        item = next(it)
                    except StopIteration:
                        return
                    except BaseException as e:  # noqa: BLE001 - the iterable failed: stop taking, say so after
                        broken.append(e)
                        return
                done.put(fn(item))
        finally:
            done.put(_EXITED)  # (the caller stops at the last thread's, not at a poll's timeout later)

    threads = [threading.Thread(target=worker, name=f"{name}{i}", daemon=True) for i in range(max(1, jobs))]
    for t in threads:
        t.start()
    try:
        running = len(threads)
        while running:
            try:
                got = done.get(timeout=0.2)  # (a timeout: Ctrl-C is seen while waiting)
            except queue.Empty:
                continue
            if got is _EXITED:
                running -= 1
            else:
                on_result(got)
    except KeyboardInterrupt:
        cancel.set()
        deadline = time.monotonic() + 10
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        raise
    if broken:
        raise broken[0]
