"""The docs: the API reference builds from the docstrings (`make docs`), results files are indexed, links resolve."""

import subprocess
import sys
from pathlib import Path

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


def test_every_results_file_is_indexed_and_every_relative_link_resolves():
    """docs/results/README.md names (by path or glob) every file under docs/results; every relative link of the
    README and of docs/ points to a file that exists."""
    import fnmatch
    import re

    root = Path(__file__).resolve().parents[1]
    results = root / "docs" / "results"
    index = (results / "README.md").read_text()
    patterns = [p for p in re.findall(r"`([^`\s]+)`", index) if "/" in p or "." in p]
    tracked = subprocess.run(["git", "ls-files", "docs/results"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.split()
    for path in tracked:
        relative = path.removeprefix("docs/results/")
        if relative != "README.md":
            assert any(fnmatch.fnmatch(relative, p) for p in patterns), f"{relative} is not in docs/results/README.md"
    notes = results / "notes.md"  # folded into docs/results.md: its links are relative to docs/
    for page in [root / "README.md", *sorted(p for p in (root / "docs").rglob("*.md") if p != notes)]:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            linked = page.parent / target if target else page
            assert linked.exists(), f"{page.relative_to(root)} links to missing {target}"
            if anchor and linked.suffix == ".md":
                assert anchor in headings(linked), f"{page.relative_to(root)} links to missing {target}#{anchor}"


def headings(page: Path) -> set[str]:
    """GitHub's anchors of a markdown page's headings (lower case, punctuation dropped, spaces as hyphens)."""
    import re

    return {re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
            for title in re.findall(r"^#+ (.*)$", page.read_text(), re.M)}
