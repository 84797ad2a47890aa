"""Keep freed memory in the process: glibc's default trimming makes the CPU training loops fault their pages in
again at every step.

A training step of the small networks here allocates and frees activations and gradients of a few hundred
kilobytes to a few megabytes. glibc's malloc serves blocks above its mmap threshold with fresh mappings and gives
the top of its heap back to the system above its trim threshold, so every step faults the same memory in again
(a ``make run`` under the defaults spent 15% of its CPU time in the kernel: docs/benchmarks.md).
``keep_freed_memory()`` raises the mmap threshold to ``MMAP_THRESHOLD``,
the trim threshold to ``TRIM_THRESHOLD`` and the top pad to ``TOP_PAD``:

- in this process, through ``mallopt`` (glibc reads its environment only when a process starts);
- in every process it starts afterwards (the spawned pool workers, a local Ray instance, subprocesses), through
  ``GLIBC_TUNABLES``, appended to what the environment already holds.

``python -m benchmarks.bench_allocator`` measures it against the defaults in the same run. The price is memory: a
process keeps up to ``TRIM_THRESHOLD`` of freed heap instead of returning it. Results do not change: the allocator
decides where a tensor lives, not what it holds (torch aligns its CPU buffers itself), and the pipeline's SISA
exactness check compares unlearned shards with retrained ones bit for bit under it. Elsewhere than on glibc
(musl, macOS) nothing happens; tunables the user set already are left as they are.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

MMAP_THRESHOLD = 64 << 20  # bytes: blocks below come from the heap (glibc's default adapts between 128 KiB and 32 MiB)
TRIM_THRESHOLD = 1 << 30  # bytes of free heap top kept before any is returned to the system
TOP_PAD = 256 << 20  # bytes added to every heap extension
TUNABLES = {"glibc.malloc.mmap_threshold": MMAP_THRESHOLD, "glibc.malloc.trim_threshold": TRIM_THRESHOLD,
            "glibc.malloc.top_pad": TOP_PAD}
_MALLOPT = {"glibc.malloc.trim_threshold": -1, "glibc.malloc.top_pad": -2,
            "glibc.malloc.mmap_threshold": -3}  # M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD of <malloc.h>
_LEGACY = {"glibc.malloc.trim_threshold": "MALLOC_TRIM_THRESHOLD_", "glibc.malloc.top_pad": "MALLOC_TOP_PAD_",
           "glibc.malloc.mmap_threshold": "MALLOC_MMAP_THRESHOLD_"}  # the older spelling of the same settings


def user_tunables(environ: dict | os._Environ = os.environ) -> set[str]:
    """The malloc tunables of ``TUNABLES`` that ``environ`` sets already (in ``GLIBC_TUNABLES`` or in the older
    ``MALLOC_*_`` variables): a user's own choice, left alone."""
    given = {item.split("=", 1)[0] for item in environ.get("GLIBC_TUNABLES", "").split(":") if "=" in item}
    return {name for name in TUNABLES if name in given or _LEGACY[name] in environ}


def tunables_for_children(environ: dict | os._Environ = os.environ) -> str:
    """``GLIBC_TUNABLES`` with ``TUNABLES`` appended, those the user set already excepted (theirs win)."""
    kept = user_tunables(environ)
    added = [f"{name}={value}" for name, value in TUNABLES.items() if name not in kept]
    return ":".join(part for part in [environ.get("GLIBC_TUNABLES", ""), *added] if part)


def without_tunables(environ: dict | os._Environ = os.environ) -> dict:
    """A copy of ``environ`` without any malloc setting (``GLIBC_TUNABLES``, ``MALLOC_*``): a child started with it
    runs under glibc's defaults (the baseline of the benchmark and the test)."""
    return {k: v for k, v in environ.items() if k != "GLIBC_TUNABLES" and not k.startswith("MALLOC_")}


def keep_freed_memory() -> bool:
    """Apply ``TUNABLES`` to this process (``mallopt``) and to the processes it starts (``GLIBC_TUNABLES``);
    returns whether this process's allocator took them (False off glibc). Idempotent."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    kept = user_tunables()
    applied = all(libc.mallopt(_MALLOPT[name], value) == 1 for name, value in TUNABLES.items() if name not in kept)
    os.environ["GLIBC_TUNABLES"] = tunables_for_children()
    return applied
