"""Write the README's entry-point table from ``MLproject`` and the entry points' own parsers.

Each row: the entry point, what its parser says it does (the sub-command's help, else the description's first
paragraph) and how many ``MLproject`` parameters it has (``--help`` lists them). The README holds the table between ``<!-- entry-points -->`` markers;
``tests/test_readme.py`` checks it is the one this writes.

    python -m tools.entry_points            # print the table
    python -m tools.entry_points --write    # replace it in README.md
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- entry-points -->", "<!-- /entry-points -->"


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def entry_point_parser(command: str) -> tuple[argparse.ArgumentParser, str | None]:
    """The parser a ``python -m <module> [sub-command]`` command builds in its ``main`` (captured before parsing),
    and the sub-command."""
    words = shlex.split(command)
    module, subcommand = words[2], (words[3] if len(words) > 3 and not words[3].startswith("-") else None)
    original = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        raise _Captured(self)

    argparse.ArgumentParser.parse_args = capture
    try:
        importlib.import_module(module).main([])
    except _Captured as captured:
        return captured.parser, subcommand
    finally:
        argparse.ArgumentParser.parse_args = original
    raise RuntimeError(f"{module}.main did not build a parser")


def description(command: str) -> str:
    """What the entry point does, in the words of its parser."""
    parser, subcommand = entry_point_parser(command)
    if subcommand:
        (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        helps = {choice.dest: choice.help for choice in action._choices_actions}
        return helps[subcommand]
    first = (parser.description or "").strip().split("\n\n")[0].replace("\n", " ")
    first = re.sub(r"^(MLflow step|Step) ``\w+``: ", "", first).replace("``", "`")
    return first.rstrip(".")


def table() -> str:
    """The markdown table: one row per ``MLproject`` entry point."""
    entry_points = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]
    rows = ["| entry point | what it does | parameters |", "|---|---|---|"]
    for name, spec in entry_points.items():
        rows.append(f"| `{name}` | {description(spec['command'])} | {len(spec.get('parameters', {}))} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace the table in README.md")
    args = parser.parse_args(argv)
    text = table()
    if not args.write:
        print(text)
        return 0
    readme = ROOT / "README.md"
    before, rest = readme.read_text().split(START, 1)
    _, after = rest.split(END, 1)
    readme.write_text(f"{before}{START}\n{text}\n{END}{after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
