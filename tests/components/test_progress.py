"""Progress bars on a terminal only: CI and `mlflow run` logs get no carriage-return fragments."""

import io
import sys

import pytest

from fairforget.components import progress as progress_module
from fairforget.components.progress import bars_wanted, progress, quiet_third_party_bars, running


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


@pytest.fixture
def off_a_terminal_with_heartbeat(monkeypatch):
    """No terminal, and a heartbeat of the given seconds counted from now."""
    import time

    def set_up(seconds: float) -> None:
        monkeypatch.delenv(progress_module.ENV, raising=False)
        monkeypatch.setattr(sys, "stderr", io.StringIO())
        monkeypatch.setattr(progress_module, "HEARTBEAT_SECONDS", seconds)
        monkeypatch.setattr(progress_module, "_last_line", time.monotonic())
    return set_up


def test_off_a_terminal_a_slow_loop_logs_a_heartbeat_line_with_its_estimate(off_a_terminal_with_heartbeat, caplog):
    """A log reader sees the step, done/total, elapsed time and time left at least every HEARTBEAT_SECONDS, from
    whichever loop is advancing, and nothing in between."""
    import logging
    import time

    off_a_terminal_with_heartbeat(0.05)
    with caplog.at_level(logging.INFO, logger="fairforget.progress"):
        for _ in progress(range(8), desc="slowed toy step"):
            time.sleep(0.03)
        bar = progress(total=4, desc="manual", enabled=False)  # a caller's "no bar" still gets heartbeats
        for _ in range(4):
            time.sleep(0.06)
            bar.update(1)
        bar.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "fairforget.progress"]
    toy = [line for line in lines if line.startswith("slowed toy step: ")]
    assert 2 <= len(toy) <= 6, lines  # about every other step: 0.03 s a step, 0.05 s between lines
    assert all("/8, elapsed 0:00" in line for line in toy)
    manual = [int(line.split(",")[0].split(": ")[1].split("/")[0]) for line in lines if line.startswith("manual")]
    assert len(manual) >= 3 and manual == sorted(manual) and manual[-1] >= 3, lines


def test_a_step_longer_than_the_heartbeat_still_gets_its_lines(off_a_terminal_with_heartbeat, caplog):
    """One epoch can take longer than HEARTBEAT_SECONDS: the heartbeat thread writes the open loop's line anyway,
    and between loops a line naming the last one, so a log read off a terminal has no gap longer than that (plus
    the thread's 1 s wake-up at most)."""
    import logging
    import time

    off_a_terminal_with_heartbeat(0.2)
    with caplog.at_level(logging.INFO, logger="fairforget.progress"):
        for _ in progress(range(2), desc="one slow epoch"):
            time.sleep(1.6)
        time.sleep(1.5)  # the loop is finished: work no loop counts
        lines = [r.getMessage() for r in caplog.records if r.name == "fairforget.progress"]
    during_first = [line for line in lines if line.startswith("one slow epoch: 0/2")]
    assert len(during_first) >= 2, lines  # written while the first step was still running
    after = [line for line in lines[lines.index(during_first[-1]) + 1:] if not line.startswith("one slow epoch")]
    assert after and after[-1].startswith("working (after one slow epoch): "), lines  # between loops too


def test_a_step_no_loop_counts_gets_heartbeat_lines_naming_it(off_a_terminal_with_heartbeat, caplog):
    """Work before any loop (a pipeline step reading its data) is named by the heartbeat while it runs, and the
    step's own loops take over while they are open; on a terminal ``running`` draws and logs nothing."""
    import logging
    import time

    off_a_terminal_with_heartbeat(0.2)
    with caplog.at_level(logging.INFO, logger="fairforget.progress"):
        with running("prepare"):
            time.sleep(1.5)
            for _ in progress(range(1), desc="inner loop"):
                time.sleep(1.5)
        lines = [r.getMessage() for r in caplog.records if r.name == "fairforget.progress"]
    before = lines[:lines.index(next(line for line in lines if line.startswith("inner loop")))]
    assert before and all(line.startswith("prepare: running, elapsed 0:0") for line in before), lines
    assert any(line.startswith("inner loop: 0/1") for line in lines), lines


def test_running_is_silent_on_a_terminal(monkeypatch):
    monkeypatch.setenv(progress_module.ENV, "1")  # bars on: the bars are the progress, no heartbeat marker
    with running("prepare"):
        loop = progress_module._innermost_open_loop()
        assert loop is None or loop.desc != "prepare"
    monkeypatch.setenv(progress_module.ENV, "0")
    with running("prepare"):
        assert progress_module._innermost_open_loop().desc == "prepare"
