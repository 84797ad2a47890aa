"""Progress: bars on a terminal, heartbeat lines in a log.

On a terminal a long loop shows a tqdm bar. In CI, under ``mlflow run`` or with output sent to a file, bars are off
(they would fill the log with carriage-return fragments) and every instrumented loop reports through one shared
heartbeat instead: whenever a loop advances and ``HEARTBEAT_SECONDS`` have passed since the last line (of any loop),
logger ``fairforget.progress`` writes one line: the step, done/total, elapsed time and an estimate of the time left.
``FAIRFORGET_PROGRESS=1`` forces bars on, ``0`` forces them off. ``quiet_third_party_bars`` applies the same rule
to MLflow's artifact bars and Great Expectations' metric bars.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Iterator

from tqdm.auto import tqdm

ENV = "FAIRFORGET_PROGRESS"
# a line at least every minute: 55 s leaves room for the watcher's 1 s polling and a busy machine (measured: a
# 60 s setting gave gaps of 61 s in a `make run` log)
HEARTBEAT_SECONDS = 55.0
log = logging.getLogger("fairforget.progress")
_last_line = time.monotonic()  # shared by every loop: one line at least every HEARTBEAT_SECONDS while any is open
_open_loops: list[weakref.ref] = []  # LogProgress loops not finished yet, oldest first
_watch_lock = threading.Lock()
_watcher: threading.Thread | None = None


def bars_wanted() -> bool:
    """True when progress bars should be drawn: forced by ``FAIRFORGET_PROGRESS``, else when stderr is a terminal."""
    forced = os.environ.get(ENV, "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class LogProgress:
    """What ``progress`` returns off a terminal: tqdm's interface (iterate, ``update``, ``set_postfix``, ``close``,
    a context manager) with heartbeat lines instead of a bar. ``disable`` is True: no bar is drawn."""

    disable = True

    def __init__(self, iterable=None, *, total: int | None = None, desc: str | None = None, **_ignored) -> None:
        self.iterable, self.desc, self.n = iterable, desc or "working", 0
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.started = time.monotonic()
        self.closed = False
        _watch(self)

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return self.total or 0

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - _last_line >= HEARTBEAT_SECONDS:
            self.log_line()

    def log_line(self) -> None:
        """One heartbeat line: step, done/total, elapsed, estimate of the time left."""
        global _last_line
        now = time.monotonic()
        _last_line = now
        elapsed = now - self.started
        if self.total and self.n:
            left = elapsed / self.n * (self.total - self.n)
            log.info("%s: %d/%d, elapsed %s, about %s left", self.desc, self.n, self.total, _duration(elapsed),
                     _duration(left))
        elif self.total:
            log.info("%s: %d/%d, elapsed %s", self.desc, self.n, self.total, _duration(elapsed))
        else:
            log.info("%s: %d done, elapsed %s", self.desc, self.n, _duration(elapsed))

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def _innermost_open_loop() -> LogProgress | None:
    """The most recently opened loop still running (loops closed or garbage-collected are dropped)."""
    with _watch_lock:
        _open_loops[:] = [ref for ref in _open_loops if ref() is not None and not ref().closed]
        return _open_loops[-1]() if _open_loops else None


def _watch(loop: LogProgress) -> None:
    """Register ``loop`` with the heartbeat thread (started on first use): when no progress line was written for
    ``HEARTBEAT_SECONDS`` (a slow epoch, or work between loops), the thread writes one itself (``_heartbeat``), so a
    log reader never waits longer than that once a step has started a loop."""
    global _watcher
    with _watch_lock:
        _open_loops.append(weakref.ref(loop))
        if _watcher is None or not _watcher.is_alive():
            _watcher = threading.Thread(target=_heartbeat, name="fairforget-heartbeat", daemon=True)
            _watcher.start()


def _heartbeat() -> None:
    """Every ``HEARTBEAT_SECONDS`` without a progress line: the innermost open loop's line, or, between loops (work
    no loop counts, such as an audit's statistics), one line naming the last loop and the time since its line."""
    global _last_line
    last_desc = None
    while True:
        time.sleep(min(1.0, HEARTBEAT_SECONDS / 4))
        loop = _innermost_open_loop()
        if loop is not None:
            last_desc = loop.desc
        quiet = time.monotonic() - _last_line
        if quiet < HEARTBEAT_SECONDS:
            continue
        if loop is not None:
            loop.log_line()
        elif last_desc is not None:
            _last_line = time.monotonic()
            log.info("working (after %s): %s since the last progress line", last_desc, _duration(quiet))


class StepProgress(LogProgress):
    """A stretch of work that no loop counts (reading a data set, a pipeline step between its loops): while no
    loop inside it is open, the heartbeat names it and its elapsed time."""

    def log_line(self) -> None:
        global _last_line
        _last_line = time.monotonic()
        log.info("%s: running, elapsed %s", self.desc, _duration(_last_line - self.started))


@contextlib.contextmanager
def running(step: str) -> Iterator[None]:
    """Mark ``step`` as running for the heartbeat (off a terminal only; a terminal has bars): every pipeline step's
    run (``tracking.step_run``) is one, so from the first step on a log off a terminal never waits longer than
    ``HEARTBEAT_SECONDS`` for a line, even in work no loop counts."""
    if bars_wanted():
        yield
        return
    marker = StepProgress(desc=step)
    try:
        yield
    finally:
        marker.close()


def progress(iterable=None, *, enabled: bool = True, **kwargs):
    """``tqdm(iterable, **kwargs)`` when ``enabled`` and ``bars_wanted()``; otherwise a ``LogProgress`` that logs a
    heartbeat line (``HEARTBEAT_SECONDS``) while the loop advances."""
    if enabled and bars_wanted():
        return tqdm(iterable, **kwargs)
    return LogProgress(iterable, **kwargs)


def quiet_third_party_bars() -> None:
    """Switch MLflow's artifact progress bars off unless bars are wanted (an explicit setting is kept)."""
    if not bars_wanted():
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
