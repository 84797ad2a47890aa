"""Fault injection for the crash tests: ``fault_point(name)`` kills the process with SIGKILL (no clean-up, no
``finally``, exactly like ``kill -9``) when the environment variable ``FAIRFORGET_FAULT`` names that point. Unset,
it does nothing. The points sit where a crash is hardest to recover from: inside the final audit, between
registering a version and recording that the run finished, inside a deletion request before and after the gate."""

from __future__ import annotations

import os
import signal

FAULT_VARIABLE = "FAIRFORGET_FAULT"


def fault_point(name: str) -> None:
    if os.environ.get(FAULT_VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
