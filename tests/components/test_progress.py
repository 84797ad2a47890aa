"""Progress bars on a terminal only: CI and `mlflow run` logs get no carriage-return fragments."""

import io
import sys

from fairforget.components import progress as progress_module
from fairforget.components.progress import bars_wanted, progress, quiet_third_party_bars


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_bars_follow_the_terminal_and_the_override(monkeypatch):
    monkeypatch.delenv(progress_module.ENV, raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not bars_wanted()
    assert progress(range(3), desc="x").disable
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    assert bars_wanted() and not progress(range(3), desc="x").disable
    assert progress(range(3), enabled=False).disable  # a caller's "no progress" always wins
    monkeypatch.setenv(progress_module.ENV, "0")
    assert not bars_wanted()
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setenv(progress_module.ENV, "1")
    assert bars_wanted()


def test_a_loop_without_a_terminal_writes_nothing(monkeypatch):
    monkeypatch.delenv(progress_module.ENV, raising=False)
    captured = io.StringIO()
    monkeypatch.setattr(sys, "stderr", captured)
    assert sum(progress(range(1000), desc="loop", file=captured)) == 499500
    assert captured.getvalue() == ""


def test_mlflow_artifact_bars_are_switched_off_without_a_terminal(monkeypatch):
    monkeypatch.delenv(progress_module.ENV, raising=False)
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    quiet_third_party_bars()
    import os

    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
