"""Refuse to start a container of the stack with a missing secret or one of the example secrets.

    python check_secrets.py [NAME ...] [-- COMMAND [ARG ...]]

Checked, before anything starts:
  - every NAME given must be set and not empty;
  - every environment variable whose name holds PASSWORD, SECRET or TOKEN (NAMEs or not) must not be empty and
    must not equal the value of any such variable in docker/.env.example (the example file beside this script,
    or FAIRFORGET_ENV_EXAMPLE), whatever its name here: AWS_SECRET_ACCESS_KEY holding the example
    MINIO_ROOT_PASSWORD is refused;
  - no ARG and no environment value may contain an example secret (MLFLOW_BACKEND_STORE_URI with the example
    POSTGRES_PASSWORD is refused).
The first problem is printed as one line on stderr, naming the variable and the fix, and the exit status is 78
(EX_CONFIG). When all is well, COMMAND replaces this process (it keeps PID 1 and the container's signals); without
COMMAND the script exits 0.

Standard library only: it runs in the pipeline image and in the MLflow server image before either imports anything.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN")
EX_CONFIG = 78
NEW_SECRET = "python3 -c \"import secrets; print(secrets.token_urlsafe(24))\""


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of an env file (comments and blank lines skipped), as Compose reads docker/.env."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def example_secrets(path: Path) -> dict[str, str]:
    """{example value: its variable} for every secret of the example env file."""
    return {value: key for key, value in read_env_file(path).items() if SECRET_NAME.search(key) and value}


def find_problem(required: list[str], environ: dict[str, str], argv: list[str], examples: dict[str, str]) -> str | None:
    """The first reason to refuse, as one line, or None."""
    for name in required:
        if not environ.get(name):
            return f"{name} is empty or unset: set it in docker/.env (make one with: {NEW_SECRET})"
    checked = dict.fromkeys([*required, *sorted(k for k in environ if SECRET_NAME.search(k))])
    for name in checked:
        value = environ[name]
        if not value:
            return f"{name} is empty: set it in docker/.env (make one with: {NEW_SECRET})"
        if value in examples:
            source = examples[value]
            held = name if name == source else f"{name} holds {source}, which"
            return (f"{held} still has its example value from docker/.env.example: set your own {source} in "
                    f"docker/.env (make one with: {NEW_SECRET})")
    for name, value in sorted(environ.items()):
        for example, source in examples.items():
            if example in value:
                return (f"{name} holds the example value of {source} from docker/.env.example: set your own {source} "
                        f"in docker/.env (make one with: {NEW_SECRET})")
    for arg in argv:
        for value, source in examples.items():
            if value in arg:
                return (f"the command line holds the example value of {source} from docker/.env.example: set your "
                        f"own {source} in docker/.env (make one with: {NEW_SECRET})")
    return None


def main(args: list[str]) -> int:
    required, command = (args[:args.index("--")], args[args.index("--") + 1:]) if "--" in args else (args, [])
    example = Path(os.environ.get("FAIRFORGET_ENV_EXAMPLE") or Path(__file__).resolve().with_name(".env.example"))
    if not example.is_file():
        print(f"refusing to start: {example} is missing, so the example secrets cannot be refused: set "
              "FAIRFORGET_ENV_EXAMPLE to docker/.env.example", file=sys.stderr)
        return EX_CONFIG
    problem = find_problem(required, dict(os.environ), command, example_secrets(example))
    if problem:
        print(f"refusing to start: {problem}", file=sys.stderr)
        return EX_CONFIG
    if command:
        os.execvp(command[0], command)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
