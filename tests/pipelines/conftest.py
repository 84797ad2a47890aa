"""The toy pipelines run under a lax policy written in each test's folder (tests/pipelines/test_pipeline.py::
tiny_pipeline): for ``promote``, that file plays the committed policy, which a promotion may only tighten."""

import pytest


@pytest.fixture(autouse=True)
def toy_policy_is_the_committed_one(tmp_path, monkeypatch):
    from fairforget.pipelines import forget

    monkeypatch.setattr(forget, "COMMITTED_POLICY", str(tmp_path / "policy.yaml"))
