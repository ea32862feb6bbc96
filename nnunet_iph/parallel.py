"""One worker pool for every per-case loop (conversion, evaluation, post-processing).

Workers are *spawned* (never forked): the parent may hold torch / OpenMP threads, which a forked
child would inherit in a broken state. Each worker watches its parent and exits when it is gone,
so a killed run leaves no orphaned processes behind.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

J = TypeVar("J")
R = TypeVar("R")


def progress_bar(total: int, enabled: bool, desc: str, unit: str = "case"):
    """A tqdm bar (a no-op object when disabled or tqdm is missing)."""
    try:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False)
    except ImportError:  # pragma: no cover - tqdm comes with nnunetv2
        class _Null:
            def update(self, n: int = 1) -> None:
                pass

            def close(self) -> None:
                pass
        return _Null()


def _init_worker(threads: int, parent: int, initializer: Callable[..., Any] | None, initargs: tuple) -> None:
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, threads))
    except ImportError:  # pragma: no cover
        pass
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if initializer is not None:
        initializer(*initargs)


def _watch_parent(parent: int) -> None:
    """Exit when the main process is gone: pool workers of a killed run would otherwise wait forever."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


def run_jobs(fn: Callable[[J], R], jobs: Sequence[J] | Iterable[J], num_workers: int = 1, *,
             desc: str | None = None, progress: bool = False, ordered: bool = True,
             initializer: Callable[..., Any] | None = None, initargs: tuple = ()) -> Iterator[tuple[J, R]]:
    """Yield ``(job, fn(job))`` for every job, in job order (``ordered``) or as they finish.

    ``num_workers <= 1`` (or a single job) runs in this process. Leaving the loop early (``break``,
    an exception) cancels the jobs not yet started. Worker exceptions propagate to the caller.
    ``desc`` names a tqdm progress bar, shown when ``progress`` is true. ``initializer(*initargs)``
    runs once in each worker process (not in this one).
    """
    jobs = list(jobs)
    bar = progress_bar(len(jobs), progress and desc is not None, desc or "")
    try:
        if num_workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                result = fn(job)
                bar.update(1)
                yield job, result
            return
        import multiprocessing

        workers = min(num_workers, len(jobs))
        threads = max(1, (os.cpu_count() or 1) // workers)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(threads, os.getpid(), initializer, initargs)) as pool:
            futures = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
            try:
                if ordered:
                    for fut, i in futures.items():
                        result = fut.result()
                        bar.update(1)
                        yield jobs[i], result
                else:
                    for fut in as_completed(futures):
                        result = fut.result()
                        bar.update(1)
                        yield jobs[futures[fut]], result
            finally:
                for fut in futures:
                    fut.cancel()
    finally:
        bar.close()
