"""Independent jobs of a run on several worker processes, one torch thread each.

A run's seeds are independent replicates and its bases are independent pretraining jobs: on a
machine with ``k`` cores, ``k`` single-threaded processes finish them close to ``k`` times as
fast as one process, where torch's intra-op threads on small models give far less (measured in
``docs/benchmarks.md``). Each job writes only its own directory, atomically, so jobs never share
a file; a job that fails does not stop the others (their work is kept), and the first failure is
raised once every job has ended.

Workers are started with ``spawn`` (no inherited torch state) and watch their parent: a worker
whose parent died (a killed run) exits at once instead of finishing its job unseen, so a resumed
run never races an orphan over the same directory.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Sequence


def resolve_workers(workers: int, n_jobs: int) -> int:
    """``workers`` processes for ``n_jobs`` jobs: 0 means one per CPU core, never more than jobs."""
    if workers < 0:
        raise ValueError(f"workers={workers}: must be 0 (one per CPU core) or a positive number of processes")
    wanted = workers or (os.cpu_count() or 1)
    return max(1, min(wanted, n_jobs))


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(3)  # the run that started us is gone
        time.sleep(0.5)


def _init_worker(parent: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def run_jobs(fn: Callable[..., Any], jobs: Sequence[tuple], *, workers: int = 0, desc: str = "jobs",
             progress: bool = True) -> list[Any]:
    """``[fn(*job) for job in jobs]``, on up to ``workers`` processes (see :func:`resolve_workers`).

    With one worker the jobs run in this process, in order (nothing is spawned). ``fn`` must be a
    module-level function. Results come back in the order of ``jobs``."""
    n = resolve_workers(workers, len(jobs))
    if n == 1:
        return [fn(*job) for job in jobs]
    from tqdm.auto import tqdm

    ctx = multiprocessing.get_context("spawn")
    results: list[Any] = [None] * len(jobs)
    errors: list[tuple[int, BaseException]] = []
    with ProcessPoolExecutor(n, mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(), 1)) as pool, \
            tqdm(total=len(jobs), desc=f"{desc} ({n} processes)", disable=not progress) as bar:
        futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                try:
                    results[futures[f]] = f.result()
                except BaseException as e:  # keep the others running: their work must not be lost
                    errors.append((futures[f], e))
                bar.update(1)
    if errors:
        errors.sort(key=lambda ie: ie[0])
        raise errors[0][1]
    return results
