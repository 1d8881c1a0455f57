"""Command-line flags declared once, as metadata of a (frozen) dataclass's fields: `flag()` declares a field and its
flag (help text, aliases, choices, type), `add_flags` turns a config class into argparse arguments, `from_flags`
turns the parsed values back into the config (`ConfigParser` does both: its parse_args returns the config). Fields
without a flag are read from the namespace when a shared helper added them under the field's name (e.g. --precision);
otherwise they keep their default. The value rules a flag's `type` and `choices` state (`positive_int` etc.) hold for a
config built in Python too: `value_problem` applies them, so the parser and the dataclasses cannot drift."""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")
_KEY = "flag"


def flag(default: Any = None, *aliases: str, help: str | None = None, group: str | None = None,
         invert: str | None = None, **argparse_kwargs: Any) -> Any:
    """A dataclass field whose flag is `--<field name>` (plus `aliases`), with `default`, `help` and argparse's
    keywords (type, choices, action, nargs, const, metavar); `group` names its --help section. A bool field with
    `invert` is set by the switch `--<invert>` instead, which turns it off (e.g. progress_bar and --no_progress)."""
    meta = {"aliases": aliases, "help": help, "group": group, "invert": invert, "kwargs": argparse_kwargs}
    return dataclasses.field(default=default, metadata={_KEY: meta})


def positive_int(value: Any) -> int:
    n = int(value)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return n


def non_negative_int(value: Any) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return n


def positive_float(value: Any) -> float:
    x = float(value)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return x


def value_problem(obj: object, flags_of: type | None = None, name: str = "--{}") -> str | None:
    """The first field of the dataclass `obj` whose value the flag of the same name on `flags_of` (default: obj's
    own class) refuses, by its `type` (e.g. positive_int) or `choices`, as `name` (formatted with the field's name)
    plus the rule's message; None when every value passes (None values pass: they mean the default)."""
    declared = {f.name: f.metadata[_KEY]["kwargs"] for f in flag_fields(flags_of or type(obj))}
    for f in dataclasses.fields(obj):
        kwargs, value = declared.get(f.name), getattr(obj, f.name)
        if kwargs is None or value is None:
            continue
        choices, convert = kwargs.get("choices"), kwargs.get("type")
        if choices is not None and value not in choices:
            return f"{name.format(f.name)}: invalid choice {value!r} (choose from {', '.join(map(str, choices))})"
        if convert is not None and not isinstance(value, bool):
            try:
                convert(value)
            except (argparse.ArgumentTypeError, TypeError, ValueError) as e:
                return f"{name.format(f.name)}: {e}"
        elif convert is not None:
            return f"{name.format(f.name)}: expected a number, got {value!r}"
    return None


def flag_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of `cls` that carry a flag, in declaration order."""
    return [f for f in dataclasses.fields(cls) if _KEY in f.metadata]


def add_flags(parser: argparse.ArgumentParser, cls: type, groups: dict[str, Any] | None = None,
              exclude: type | None = None, only: type | None = None) -> dict[str, Any]:
    """Add one argument per flagged field of `cls` (dest = the field name, default = the field's), each in the
    argument group its metadata names (created on first use), except the fields of `exclude` (a base class whose
    flags were added already) or, with `only`, all but the fields of that base class; returns the groups (to add
    more flags to them)."""
    groups = {} if groups is None else groups
    skip = {f.name for f in dataclasses.fields(exclude)} if exclude is not None else set()
    keep = {f.name for f in dataclasses.fields(only)} if only is not None else None
    for f in flag_fields(cls):
        if f.name in skip or (keep is not None and f.name not in keep):
            continue
        meta = f.metadata[_KEY]
        name = meta["group"]
        if name is not None and name not in groups:
            groups[name] = parser.add_argument_group(name)
        target = groups[name] if name is not None else parser
        if meta.get("invert"):
            target.add_argument(f"--{meta['invert']}", *meta["aliases"], dest=meta["invert"], action="store_true",
                                help=meta["help"])
            continue
        kwargs = {"default": f.default, **meta["kwargs"]}
        target.add_argument(f"--{f.name}", *meta["aliases"], dest=f.name, help=meta["help"], **kwargs)
    return groups


def from_flags(cls: type[T], namespace: object, **values: Any) -> T:
    """`cls` built from the parsed flags (argparse's result): every field whose name the namespace holds (an
    inverted field: the negation of its switch), then `values` on top."""
    parsed = vars(namespace)
    found = {}
    for f in dataclasses.fields(cls):
        invert = f.metadata.get(_KEY, {}).get("invert")
        if f.init and invert and invert in parsed:
            found[f.name] = not parsed[invert]
        elif f.init and f.name in parsed:
            found[f.name] = parsed[f.name]
    return cls(**{**found, **values})


class ConfigParser(argparse.ArgumentParser):
    """An ArgumentParser whose `parse_args` returns the config `cls` built from the flags (`from_flags`) instead of
    a namespace, so that a script's helpers take the typed config; a ValueError the config raises is a usage error
    (exit status 2). Its flags are added as for any parser (`add_flags`, shared helpers)."""

    def __init__(self, cls: type, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config_cls = cls

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed = super().parse_args(args, namespace)
        try:
            return from_flags(self.config_cls, parsed)
        except ValueError as e:
            self.error(str(e))
