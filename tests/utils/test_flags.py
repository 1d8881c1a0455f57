"""dpr/utils/flags.py: flags declared once as dataclass field metadata, turned into argparse and back."""
import argparse
from dataclasses import dataclass

import pytest

from dpr.utils.flags import add_flags, flag, from_flags


@dataclass(frozen=True)
class Base:
    name: str = flag("x", group="base", help="A name.")


@dataclass(frozen=True)
class Config(Base):
    resolved: str = "auto"  # no flag: read from the namespace when a shared helper added it, else the default
    size: int = flag(3, "--size-alias", group="sizes", type=int, help="A size.")
    mode: str | None = flag(None, group="sizes", choices=["a", "b"])
    on: bool = flag(False, action="store_true")


def parser_for(cls, exclude=None):
    parser = argparse.ArgumentParser()
    groups = add_flags(parser, cls, exclude=exclude)
    return parser, groups


def test_fields_become_flags_with_their_defaults_aliases_and_groups():
    parser, groups = parser_for(Config)
    assert set(groups) == {"base", "sizes"}
    assert from_flags(Config, parser.parse_args([])) == Config()
    got = from_flags(Config, parser.parse_args(["--size-alias", "5", "--mode", "b", "--on", "--name", "y"]))
    assert got == Config(name="y", size=5, mode="b", on=True)
    assert "A size." in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "c"])


def test_values_override_and_unflagged_fields_are_read_when_present():
    parser, _ = parser_for(Config)
    parser.add_argument("--resolved", default="auto")
    ns = parser.parse_args(["--resolved", "fp32"])
    assert from_flags(Config, ns, on=True) == Config(resolved="fp32", on=True)


def test_exclude_leaves_a_base_class_flags_to_whoever_added_them():
    parser = argparse.ArgumentParser()
    add_flags(parser, Base)
    add_flags(parser, Config, exclude=Base)  # no "conflicting option string: --name"
    assert from_flags(Config, parser.parse_args(["--name", "z"])).name == "z"
