"""Signed gate decisions: a version's decision tags are trusted only when fairforget wrote them.

``promote`` and ``forget`` decide from a version's tags (``gate``, the certificates ``mia_*``, ``contains_deleted``,
``acc_test``, ...), and any account with EDIT on the registered model can set tags. So every writer of those tags in
fairforget (the gate, the audit step, a served deletion request, retirement) signs them: an HMAC-SHA256, under a
key only the gate's machine or service holds, of the model name, the version and every tag in ``signed_tags``
(absent ones included as absent), stored as the tag ``gate_signature``. A tag set or changed by anything else, or a
version registered by hand, no longer matches, and ``promote`` and ``forget`` refuse it.

The key is the file ``$FAIRFORGET_GATE_KEY_FILE`` (default ``~/.config/fairforget/gate.key``, outside any clone):
32 random bytes, created on first use with mode 0600; a key file that others can read is refused. Whoever can read
the key can sign: keep it with the gate (in the Docker stack, a secret of the pipeline service).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Mapping

from fairforget.errors import ConfigError

KEY_ENV = "FAIRFORGET_GATE_KEY_FILE"
SIGNATURE_TAG = "gate_signature"
SIGNED_TAGS = ("gate", "run_id", "data_md5", "audit_data_md5", "audit_time", "data_time", "contains_deleted",
               "retired", "requested_verdict", "acc_test", "audit_power", "generator_audit", "unlearning_exactness",
               "natural_members_detected", "generator_privacy", "deletion_request")
SIGNED_PREFIXES = ("mia_", "policy_")


def key_path() -> Path:
    return Path(os.environ.get(KEY_ENV) or Path.home() / ".config" / "fairforget" / "gate.key")


def gate_key(create: bool = True) -> bytes:
    """The gate's signing key (see the module docstring); created when missing and ``create``."""
    path = key_path()
    if not path.exists():
        if not create:
            raise ConfigError(f"the gate's signing key {path} does not exist: only the machine that registered the "
                              f"versions can verify them; set {KEY_ENV} to its key file")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            return gate_key(create=False)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
            handle.flush()
            os.fsync(handle.fileno())
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"the gate's signing key {path} is readable by others: `chmod 600 {path}`")
    key = path.read_text().strip()
    if len(key) < 32:
        raise ConfigError(f"the gate's signing key {path} is too short: delete it to have a new one made")
    return key.encode()


def signed_tags(tags: Mapping[str, str]) -> dict[str, str | None]:
    """The tags a signature covers: every name of ``SIGNED_TAGS`` (None when absent) and every tag starting with
    one of ``SIGNED_PREFIXES``."""
    covered = {name: tags.get(name) for name in SIGNED_TAGS}
    covered.update({k: v for k, v in tags.items() if k.startswith(SIGNED_PREFIXES)})
    return covered


def signature(model_name: str, version: str | int, tags: Mapping[str, str], key: bytes) -> str:
    """HMAC-SHA256 (hex) of the model name, the version and ``signed_tags(tags)``."""
    message = json.dumps({"model": model_name, "version": str(version), "tags": signed_tags(tags)}, sort_keys=True)
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def signature_problem(model_name: str, version: str | int, tags: Mapping[str, str], key: bytes) -> str | None:
    """None when the version's tags carry a valid signature, else why not (one sentence)."""
    stored = tags.get(SIGNATURE_TAG)
    if not stored:
        return (f"{model_name} version {version} carries no gate signature: it was registered by hand, or before "
                "decisions were signed; run the pipeline to register a signed version")
    if not hmac.compare_digest(stored, signature(model_name, version, tags, key)):
        return (f"{model_name} version {version}'s decision tags were set or changed outside fairforget (its gate "
                "signature does not match them); it can never be promoted: promote another version")
    return None


def serving_problem(model_name: str, version: str | int, tags: Mapping[str, str], key: bytes) -> str | None:
    """None when a version may answer requests: its decision tags are signed by the gate (``signature_problem``),
    it passed the gate, and it was neither retired nor marked as holding a deleted record; else why not. Moving an
    alias needs only EDIT on the model, so a server checks this itself before it serves the version the alias names."""
    problem = signature_problem(model_name, version, tags, key)
    if problem:
        return problem
    if tags.get("gate") != "passed":
        return f"{model_name} version {version} did not pass the registry gate (gate={tags.get('gate')!r})"
    if tags.get("retired") == "true" or tags.get("contains_deleted") == "true":
        return f"{model_name} version {version} holds a record deleted on request (retired or contains_deleted)"
    return None
