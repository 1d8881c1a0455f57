"""Command-line flags declared once, as metadata of a (frozen) dataclass's fields: `flag()` declares a field and its
flag (help text, aliases, choices, type), `add_flags` turns a config class into argparse arguments, `from_flags`
turns the parsed values back into the config. Fields without a flag are read from the namespace when a shared
helper added them under the field's name (e.g. --precision); otherwise they keep their default."""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")
_KEY = "flag"


def flag(default: Any = None, *aliases: str, help: str | None = None, group: str | None = None,
         **argparse_kwargs: Any) -> Any:
    """A dataclass field whose flag is `--<field name>` (plus `aliases`), with `default`, `help` and argparse's
    keywords (type, choices, action, nargs, const, metavar); `group` names its --help section."""
    meta = {"aliases": aliases, "help": help, "group": group, "kwargs": argparse_kwargs}
    return dataclasses.field(default=default, metadata={_KEY: meta})


def flag_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of `cls` that carry a flag, in declaration order."""
    return [f for f in dataclasses.fields(cls) if _KEY in f.metadata]


def add_flags(parser: argparse.ArgumentParser, cls: type, groups: dict[str, Any] | None = None,
              exclude: type | None = None) -> dict[str, Any]:
    """Add one argument per flagged field of `cls` (dest = the field name, default = the field's), each in the
    argument group its metadata names (created on first use), except the fields of `exclude` (a base class whose
    flags were added already); returns the groups (to add more flags to them)."""
    groups = {} if groups is None else groups
    skip = {f.name for f in dataclasses.fields(exclude)} if exclude is not None else set()
    for f in flag_fields(cls):
        if f.name in skip:
            continue
        meta = f.metadata[_KEY]
        name = meta["group"]
        if name is not None and name not in groups:
            groups[name] = parser.add_argument_group(name)
        target = groups[name] if name is not None else parser
        kwargs = {"default": f.default, **meta["kwargs"]}
        target.add_argument(f"--{f.name}", *meta["aliases"], dest=f.name, help=meta["help"], **kwargs)
    return groups


def from_flags(cls: type[T], namespace: argparse.Namespace, **values: Any) -> T:
    """`cls` built from the parsed flags: every field whose name the namespace holds, then `values` on top."""
    parsed = vars(namespace)
    found = {f.name: parsed[f.name] for f in dataclasses.fields(cls) if f.init and f.name in parsed}
    return cls(**{**found, **values})
