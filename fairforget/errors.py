"""The exceptions fairforget raises for what a user can fix. Every message says what was wrong (with the value)
and what to do; the command lines turn any ``FairforgetError`` into one ``error: ...`` line and exit code 2.

Each class also derives from the built-in exception a caller would expect (``ValueError`` for bad input,
``RuntimeError`` for a broken state), so ``except ValueError`` keeps working.

    FairforgetError
    +-- ConfigError            a parameter is out of range or unknown (ValueError)
    +-- DataError              a data set, file or id list is missing, malformed or inconsistent (ValueError)
    |   +-- PlanError          a request does not fit the SISA plan: unknown ids, bad shard numbers
    |   +-- DeletionCapacityError  one request removes more than the deletion cap of a shard
    +-- CheckpointError        a checkpoint is missing, corrupt or not the one its name promises (RuntimeError)
    +-- UnlearningNotExactError  an unlearned shard differs from one retrained from scratch (RuntimeError)
    +-- ResumeError            a run cannot be resumed from its saved state (RuntimeError)
    +-- PromotionRefused       a registered version may not become champion (ValueError)
    +-- ToolError              an external tool (DVC) failed; the message carries its own (RuntimeError)
"""

from __future__ import annotations


class FairforgetError(Exception):
    """Base class: a problem the user can fix; the message says how."""


class ConfigError(FairforgetError, ValueError):
    """A parameter is out of range, of the wrong type or unknown."""


class DataError(FairforgetError, ValueError):
    """A data set, file or id list is missing, malformed or inconsistent."""


class PlanError(DataError):
    """A request does not fit the SISA plan (unknown or forgotten ids, bad shard numbers)."""


class DeletionCapacityError(DataError):
    """An unlearning request removes more than ``max_deletion_fraction`` of a shard in one call."""


class CheckpointError(FairforgetError, RuntimeError):
    """A checkpoint is missing, corrupt or not the one its name promises."""


class UnlearningNotExactError(FairforgetError, RuntimeError):
    """The exactness audit found an unlearned shard that differs from one retrained from scratch."""


class ResumeError(FairforgetError, RuntimeError):
    """A run cannot be resumed from its saved state."""


class PromotionRefused(FairforgetError, ValueError):
    """A registered version may not become champion; the message gives the rule it breaks."""


class ToolError(FairforgetError, RuntimeError):
    """An external tool the step runs (``dvc add``) failed; the message carries the tool's own message."""
