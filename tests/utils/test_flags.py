"""dpr/utils/flags.py: flags declared once as dataclass field metadata, turned into argparse and back."""
import argparse
from dataclasses import dataclass

import pytest

from dpr.utils.flags import ConfigParser, add_flags, flag, from_flags


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


@dataclass(frozen=True)
class Switches:
    progress: bool = flag(True, group="log", invert="quiet", help="No bar.")
    size: int = flag(3, type=int, help="A size.")

    def __post_init__(self) -> None:
        if self.size > 9:
            raise ValueError("--size must be at most 9")


def test_an_inverted_field_is_set_by_its_switch():
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_flags(parser, Switches)
    assert from_flags(Switches, parser.parse_args([])).progress is True
    assert from_flags(Switches, parser.parse_args(["--quiet"])).progress is False
    text = " ".join(parser.format_help().split())
    assert "--quiet No bar. (default: False)" in text and "--progress" not in text


def test_only_adds_a_base_class_flags_first():
    parser = argparse.ArgumentParser()
    groups = add_flags(parser, Config, only=Base)
    assert [a.dest for a in parser._actions if a.dest != "help"] == ["name"]
    add_flags(parser, Config, groups, exclude=Base)
    assert [a.dest for a in parser._actions if a.dest != "help"] == ["name", "size", "mode", "on"]


def test_config_parser_returns_the_config_and_a_config_error_is_a_usage_error(capsys):
    parser = ConfigParser(Switches)
    add_flags(parser, Switches)
    assert parser.parse_args(["--size", "4", "--quiet"]) == Switches(progress=False, size=4)
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--size", "10"])
    assert e.value.code == 2 and "--size must be at most 9" in capsys.readouterr().err


def test_a_config_built_in_python_obeys_each_flags_type_and_choices_as_the_parser_does(capsys):
    # derived from the metadata, so the parser's rule and the dataclass's cannot drift: every positive_int flag of
    # dense_retriever.py refuses 0 alike from the command line and from Python, with the same words
    import dense_retriever as dr
    from dpr.options import positive_int
    from dpr.retrieval.config import RetrievalConfig
    from dpr.utils.flags import flag_fields, value_problem

    base = dict(qa_file="q", index_dir="d", out_file="o")
    positive = [f.name for f in flag_fields(RetrievalConfig) if f.metadata["flag"]["kwargs"].get("type") is positive_int]
    assert {"n_docs", "batch_size", "search_shard_size", "nprobe", "hybrid_depth"} <= set(positive)
    for name in positive:
        with pytest.raises(ValueError, match=f"^--{name}: must be a positive integer, got 0$"):
            RetrievalConfig(**base, **{name: 0})
        with pytest.raises(SystemExit):
            dr.parse_args(["--qa_file", "q", "--index_dir", "d", "--out_file", "o", f"--{name}", "0"])
        assert "must be a positive integer, got 0" in capsys.readouterr().err
    assert value_problem(RetrievalConfig(**base)) is None  # the defaults pass
    with pytest.raises(ValueError, match=r"^--index_type: invalid choice 'ivf' \(choose from flat, hnsw, ivfpq\)$"):
        RetrievalConfig(**base, index_type="ivf")
