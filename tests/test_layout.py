"""The design card's layout: components/ and pipelines/ at the top level are the sub-packages of ``fairforget``
(pyproject's package-dir), importable from anywhere, in layers (components -> pipelines -> tools -> benchmarks and
experiments) and without import circles, counting the imports inside functions too."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"fairforget": ROOT / "fairforget", "fairforget.components": ROOT / "components",
            "fairforget.pipelines": ROOT / "pipelines", "tools": ROOT / "tools", "benchmarks": ROOT / "benchmarks",
            "experiments": ROOT / "experiments"}
# a module may import its own layer and the layers before it; benchmarks and experiments not each other
LAYERS = {"fairforget.components": 0, "fairforget.pipelines": 1, "tools": 2, "benchmarks": 3, "experiments": 3}


def layer(module: str) -> tuple[str, int] | None:
    for prefix, rank in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return prefix, rank
    return None


def module_imports() -> dict[str, set[str]]:
    """{module: the project modules it imports, at module level or inside a function} for every project module."""
    modules = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            if package == "fairforget" and path.parent != folder:
                continue
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            modules[".".join([package, *parts])] = path
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        graph[name] = {m for m in imported if m.split(".")[0] in ("fairforget", "benchmarks", "experiments", "tools")}
    return graph


def test_the_top_level_is_the_cards_and_import_fairforget_works_outside_the_checkout(tmp_path):
    assert {"components", "pipelines", "tests", "docker", "MLproject", "data.dvc", "README.md"} <= {
        p.name for p in ROOT.iterdir()}
    assert not (ROOT / "fairforget" / "components").exists() and not (ROOT / "fairforget" / "pipelines").exists()
    code = ("import fairforget, fairforget.components.gate as g, fairforget.pipelines.faults as m; "
            "print(g.__file__); print(m.__file__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    gate_file, main_file = done.stdout.split()
    assert Path(gate_file) == ROOT / "components" / "gate.py" and Path(main_file) == ROOT / "pipelines" / "faults.py"


def test_layers_point_one_way_and_no_module_imports_itself_in_a_circle():
    graph = module_imports()
    for name, imported in graph.items():
        own = layer(name)
        if own is None:  # the fairforget facade re-exports the API
            continue
        for other in imported:
            theirs = layer(other)
            assert theirs is None or theirs[1] < own[1] or theirs[0] == own[0], f"{name} imports {other}"
    known = {name: {m for m in imported if m in graph} for name, imported in graph.items()}
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for other in known[name]:
            assert state.get(other) != 1, f"import circle: {' -> '.join(path + [other])}"
            if other not in state:
                visit(other, path + [other])
        state[name] = 2

    for name in known:
        if name not in state:
            visit(name, [name])
