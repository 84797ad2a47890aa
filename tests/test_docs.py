"""`make docs`: the API reference builds from the docstrings and documents the public API."""

import subprocess
import sys

import pytest

import fairforget


@pytest.mark.integration  # pdoc imports and renders every module (~25 s): make test-all
def test_api_reference_builds_and_lists_the_public_api(tmp_path):
    subprocess.run([sys.executable, "-m", "pdoc", "--docformat", "restructuredtext", "--output-directory",
                    str(tmp_path), "fairforget", "fairforget.components", "fairforget.pipelines",
                    "fairforget.errors"], check=True, capture_output=True, timeout=300)
    page = (tmp_path / "fairforget.html").read_text()
    for name in ("ForgettingLoop", "audit_membership", "SisaModel", "augment", "FairforgetError"):
        assert name in page and name in fairforget.__all__
    assert (tmp_path / "fairforget" / "components" / "forgetting.html").is_file()
