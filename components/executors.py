"""Run independent tasks (one per shard) serially, in a local process pool, or on Ray: a registry by name.

``run_tasks(function, tasks, executor=...)`` returns ``[function(t) for t in tasks]`` in task order whichever
executor runs them. ``function`` must be a module-level function and tasks picklable. The executors change where
a task runs, never what it computes: a task that pins its own torch thread count gives bit-identical results
under each of them (the SISA shard tasks do).

- ``serial``: in this process, one after another.
- ``local`` (default): ``concurrent.futures.ProcessPoolExecutor`` with the ``spawn`` start method (safe with torch's
  thread pools), ``min(len(tasks), max_workers or os.cpu_count())`` workers. A single task runs in-process: starting
  a worker would only add seconds.
- ``ray``: Ray remote tasks of ``num_cpus`` CPUs each. ``ray_address`` joins an existing cluster
  (``ray.init(address=...)``, e.g. ``"auto"`` or ``"ray://head:10001"``); without it a local Ray instance starts
  with ``max_workers or os.cpu_count()`` CPUs. The ``fairforget`` package travels to the workers as a Ray
  ``py_modules`` runtime environment; files the tasks read or write (checkpoints) must be on a file system every
  node sees.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
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


def run_local_pool(function: Callable, tasks: Sequence, max_workers: int | None = None,
                   ray_address: str | None = None, progress: bool = False) -> list:
    if len(tasks) <= 1:
        return run_serial(function, tasks, progress=progress)
    workers = min(len(tasks), max_workers or os.cpu_count() or 1)
    root = logging.getLogger()
    log_level = root.level if root.handlers else None  # workers log (progress heartbeats) as the parent does
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_configure_worker_logging, initargs=(log_level,)) as pool:
        futures = [pool.submit(function, task) for task in tasks]
        return [future.result() for future in progress_bar(futures, enabled=progress, desc="tasks", leave=False)]


def start_ray(ray_address: str | None = None, num_cpus: int | None = None) -> Any:
    """Connect to Ray (an existing cluster at ``ray_address``, else a local instance of ``num_cpus`` CPUs)."""
    import ray

    if ray.is_initialized():
        return ray
    import tempfile

    from fairforget.components.packaging import package_tree

    # the package as one folder (components/ inside fairforget/), shipped to the workers; kept for the session
    runtime_env = {"py_modules": [str(package_tree(tempfile.mkdtemp(prefix="fairforget-ray-")))]}
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
