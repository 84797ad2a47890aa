"""One serialisation convention for every configuration: frozen dataclasses with ``to_dict`` and ``from_dict``.

``to_dict()`` gives a JSON-ready dict (nested configs as dicts, tuples as lists); ``from_dict(record)`` is its
inverse, rebuilding nested configs from their type hints and tuples from lists, and refusing unknown keys with a
``ConfigError`` that lists the known ones. ``replace(**changes)`` is ``dataclasses.replace``.

    >>> from fairforget.components.sisa import SisaConfig
    >>> SisaConfig.from_dict(SisaConfig().to_dict()) == SisaConfig()
    True
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from fairforget.errors import ConfigError

C = TypeVar("C", bound="ConfigBase")


class ConfigBase:
    """Mixin for frozen configuration dataclasses (see the module docstring)."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[C], record: typing.Mapping[str, Any]) -> C:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} keys {unknown}; known: {sorted(known)}")
        hints = typing.get_type_hints(cls)
        return cls(**{name: _typed(value, hints[name]) for name, value in record.items()})

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)


def _plain(value: Any) -> Any:
    if isinstance(value, ConfigBase):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _typed(value: Any, hint: Any) -> Any:
    """``value`` (from JSON) as the type ``hint`` asks: nested configs rebuilt, lists back to tuples."""
    candidates = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, ConfigBase) and isinstance(value, dict):
            return candidate.from_dict(value)
        if (candidate is tuple or typing.get_origin(candidate) is tuple) and isinstance(value, list):
            return tuple(value)
    return value
