"""Run independent tasks (one per shard) serially, in a local process pool, or on Ray: a registry by name.

``run_tasks(function, tasks, executor=...)`` returns ``[function(t) for t in tasks]`` in task order whichever
executor runs them. ``function`` must be a module-level function and tasks picklable. The executors change where
a task runs, never what it computes: a task that pins its own torch thread count gives bit-identical results
under each of them (the SISA shard tasks do).

- ``serial``: in this process, one after another.
- ``local`` (default): a ``concurrent.futures.ProcessPoolExecutor`` with the ``spawn`` start method (safe with torch's
  thread pools), kept for the life of the process and reused by every call with the same worker count: a spawned
  worker imports the caller's main module (the pipeline's: torch, diffusers, MLflow), which cost about 8 s of the
  two cores per Algorithm-2 step when each call started its own. ``min(len(tasks), max_workers or os.cpu_count())``
  workers (one per task on two cores was slower: five one-thread SISA shards trained in 78 s on five workers
  against 51 s on two, though two workers leave the last round on one core). Workers exit when the process that
  started them dies (a watchdog thread), so a killed run leaves none behind. A single task runs in-process:
  starting a worker would only add seconds.
- ``ray``: Ray remote tasks of ``num_cpus`` CPUs each. ``ray_address`` joins an existing cluster
  (``ray.init(address=...)``, e.g. ``"auto"`` or ``"ray://head:10001"``); without it a local Ray instance starts
  with ``max_workers or os.cpu_count()`` CPUs. The ``fairforget`` package travels to the workers as a Ray
  ``py_modules`` runtime environment; files the tasks read or write (checkpoints) must be on a file system every
  node sees.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Sequence

from fairforget.components.progress import progress as progress_bar
from fairforget.errors import ConfigError



def run_serial(function: Callable, tasks: Sequence, max_workers: int | None = None, ray_address: str | None = None,
               progress: bool = False) -> list:
    return [function(task) for task in progress_bar(tasks, enabled=progress, desc="tasks", leave=False)]


def _configure_worker_logging(level: int | None) -> None:
    """A spawned worker starts with logging unconfigured: give it the parent's level (None: leave it so), and the
    time of day on every line, as the entry points write theirs (a log read later shows where the time went)."""
    if level is not None:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def _exit_with_parent(parent: int, interval: float = 1.0) -> None:
    """Exit this worker as soon as ``parent`` is no longer its parent (killed: the worker is re-parented)."""
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(0)


def _start_worker(log_level: int | None, parent: int) -> None:
    from fairforget.components.allocator import keep_freed_memory

    keep_freed_memory()  # inherited with the environment when the parent set it; here for any other caller
    _configure_worker_logging(log_level)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="exit-with-parent").start()


_POOL: dict[tuple[int, int | None], ProcessPoolExecutor] = {}  # at most one live pool: (workers, log level) -> pool


def shutdown_pool() -> None:
    """Stop the kept worker pool (at exit, or to free its processes); the next call starts a new one."""
    for pool in _POOL.values():
        pool.shutdown(wait=True, cancel_futures=True)
    _POOL.clear()


atexit.register(shutdown_pool)


def local_workers(tasks: int, max_workers: int | None = None) -> int:
    """Workers for ``tasks`` tasks: no more than the tasks, ``max_workers`` (default the cores)."""
    return min(tasks, max_workers or os.cpu_count() or 1)


def _kept_pool(workers: int, log_level: int | None) -> ProcessPoolExecutor:
    key = (workers, log_level)
    if key not in _POOL:
        shutdown_pool()
        _POOL[key] = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start_worker, initargs=(log_level, os.getpid()))
    return _POOL[key]


def run_local_pool(function: Callable, tasks: Sequence, max_workers: int | None = None,
                   ray_address: str | None = None, progress: bool = False) -> list:
    if len(tasks) <= 1:
        return run_serial(function, tasks, progress=progress)
    root = logging.getLogger()
    log_level = root.level if root.handlers else None  # workers log (progress heartbeats) as the parent does
    pool = _kept_pool(local_workers(len(tasks), max_workers), log_level)
    try:
        futures = [pool.submit(function, task) for task in tasks]
        return [future.result() for future in progress_bar(futures, enabled=progress, desc="tasks", leave=False)]
    except BrokenProcessPool:
        shutdown_pool()  # a worker died (killed, out of memory): the next call starts afresh
        raise


def start_ray(ray_address: str | None = None, num_cpus: int | None = None) -> Any:
    """Connect to Ray (an existing cluster at ``ray_address``, else a local instance of ``num_cpus`` CPUs)."""
    import ray

    if ray.is_initialized():
        return ray
    import atexit
    import shutil
    import tempfile

    from fairforget.components.packaging import package_tree

    # the package as one folder (components/ inside fairforget/), shipped to the workers; kept for the process
    scratch = tempfile.mkdtemp(prefix="fairforget-ray-")
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    from fairforget.components.allocator import tunables_for_children

    # the workers' allocator as this process's (components/allocator.py): a cluster's workers do not inherit it
    runtime_env = {"py_modules": [str(package_tree(scratch))],
                   "env_vars": {"GLIBC_TUNABLES": tunables_for_children()}}
    if ray_address:
        ray.init(address=ray_address, runtime_env=runtime_env, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, runtime_env=runtime_env,
                 log_to_driver=False)
    return ray


def _apply(function: Callable, task: Any) -> Any:
    """``function(task)``: the one remote function Ray runs (any picklable callable, builtins included)."""
    return function(task)


def run_ray(function: Callable, tasks: Sequence, max_workers: int | None = None, ray_address: str | None = None,
            progress: bool = False, num_cpus_per_task: float = 1) -> list:
    if not tasks:
        return []
    ray = start_ray(ray_address, max_workers)
    remote = ray.remote(num_cpus=num_cpus_per_task, max_retries=0)(_apply)
    function_ref = ray.put(function)
    refs = [remote.remote(function_ref, task) for task in tasks]
    return [ray.get(ref) for ref in progress_bar(refs, enabled=progress, desc="ray tasks", leave=False)]


EXECUTORS: dict[str, Callable[..., list]] = {
    "serial": run_serial,
    "local": run_local_pool,
    "ray": run_ray,
}


def run_tasks(function: Callable, tasks: Sequence, executor: str = "local", max_workers: int | None = None,
              ray_address: str | None = None, progress: bool = False) -> list:
    """``[function(t) for t in tasks]`` (in order) run by ``executor`` (a key of ``EXECUTORS``)."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; known executors: {', '.join(sorted(EXECUTORS))}")
    if max_workers is not None and max_workers < 1:
        raise ConfigError(f"max_workers must be >= 1 (or None for all cores), got {max_workers}")
    return EXECUTORS[executor](function, list(tasks), max_workers=max_workers, ray_address=ray_address,
                               progress=progress)
