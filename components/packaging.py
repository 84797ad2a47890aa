"""The ``fairforget`` package as one folder, for code that leaves this process: a logged model's code
(``mlflow.pyfunc.log_model(code_paths=...)``) and Ray's workers (``runtime_env={"py_modules": [...]}``).

In the repository, ``components/`` and ``pipelines/`` sit beside ``fairforget/`` and pyproject's ``package-dir``
maps them to ``fairforget.components`` and ``fairforget.pipelines``; a copied folder has no such mapping, so
``package_tree`` assembles ``fairforget/`` with ``components/`` inside it (what those consumers import).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc")


def package_tree(folder: str | Path) -> Path:
    """Assemble ``folder/fairforget`` (``__init__.py``, ``errors.py``, ``components/``); returns that path. The
    package folders are located, not imported (this module is part of the package)."""
    package = Path(importlib.util.find_spec("fairforget").origin).parent
    components = Path(__file__).resolve().parent
    target = Path(folder) / "fairforget"
    shutil.copytree(package, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "components", "pipelines"))
    shutil.copytree(components, target / "components", ignore=SKIPPED)
    return target
