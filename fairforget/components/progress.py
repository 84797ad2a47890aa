"""Progress bars that show on a terminal only.

On a terminal a long loop shows a tqdm bar; in CI, under ``mlflow run`` or with output sent to a file, bars are off
(tqdm's ``disable=None``), so logs hold one line per step instead of thousands of carriage-return fragments.
``FAIRFORGET_PROGRESS=1`` forces bars on, ``0`` forces them off. ``quiet_third_party_bars`` applies the same rule
to MLflow's artifact bars and Great Expectations' metric bars.
"""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm

ENV = "FAIRFORGET_PROGRESS"


def bars_wanted() -> bool:
    """True when progress bars should be drawn: forced by ``FAIRFORGET_PROGRESS``, else when stderr is a terminal."""
    forced = os.environ.get(ENV, "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress(iterable=None, *, enabled: bool = True, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)``, drawn only when ``enabled`` and ``bars_wanted()``."""
    return tqdm(iterable, disable=not (enabled and bars_wanted()), **kwargs)


def quiet_third_party_bars() -> None:
    """Switch MLflow's artifact progress bars off unless bars are wanted (an explicit setting is kept)."""
    if not bars_wanted():
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
