"""A background thread that runs submitted calls one at a time, in order: metric updates off the main thread."""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

__all__ = ["UpdateWorker"]


class UpdateWorker:
    """Runs submitted calls one at a time, in submission order, on one background thread.

    Made for metric updates that should overlap the caller's next batch: the kernels of
    :mod:`camlab.wsol` release the GIL (numba ``nogil``, OpenCV), so the update of batch i runs while
    the main thread computes batch i + 1. One thread and a FIFO queue: the calls run exactly as a plain loop
    would run them (same order, same state), so results are bit-identical to calling them directly.

    * ``submit`` blocks while ``max_pending`` calls are queued (back-pressure: at most that many batches
      are held in memory);
    * the first exception a call raises is stored; later calls are skipped, and the exception is re-raised
      (with its traceback) by the next ``submit``, ``join`` or ``close``;
    * ``join`` waits until every submitted call has run; call it before reading what the calls wrote (e.g.
      before ``compute()``). ``close`` joins and stops the thread (a later ``submit`` starts a new one).

    Nothing else may touch the objects the queued calls use until ``join`` returns: in particular not
    ``Metric.to()``, which rebuilds the list states.

    Example:
        >>> out = []
        >>> w = UpdateWorker()
        >>> for i in range(3):
        ...     w.submit(out.append, i)
        >>> w.join(); out
        [0, 1, 2]
        >>> w.close()
    """

    def __init__(self, max_pending: int = 2, name: str = "camlab-metric-updates") -> None:
        if int(max_pending) < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.max_pending = int(max_pending)
        self.name = name
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __getstate__(self) -> dict:  # picklable (ddp_spawn, deepcopy): the thread and queue are not copied
        return {"max_pending": self.max_pending, "name": self.name, "_queue": None, "_thread": None, "_error": None}

    def _run(self, q: queue.Queue) -> None:
        while True:
            item = q.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    fn, args, kwargs = item
                    fn(*args, **kwargs)
            except BaseException as err:  # kept for the caller's thread; later calls are skipped
                self._error = err
            finally:
                item = None  # drop the batch's references before waiting for the next one
                q.task_done()

    def _raise_pending(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue ``fn(*args, **kwargs)``; re-raises an earlier call's exception instead of queueing."""
        self._raise_pending()
        if self._thread is None or not self._thread.is_alive():
            self._queue = queue.Queue(maxsize=self.max_pending)
            self._thread = threading.Thread(target=self._run, args=(self._queue,), name=self.name, daemon=True)
            self._thread.start()
        self._queue.put((fn, args, kwargs))

    def join(self) -> None:
        """Wait for every submitted call; re-raise the first exception one of them raised."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.join()
        self._raise_pending()

    def close(self, raise_errors: bool = True) -> None:
        """Join, then stop the thread. ``raise_errors=False`` drops a pending exception (cleanup paths)."""
        try:
            if self._thread is not None and self._thread.is_alive():
                self._queue.join()
                self._queue.put(None)
                self._thread.join()
        finally:
            self._thread = None
            self._queue = None
            if raise_errors:
                self._raise_pending()
            else:
                self._error = None

