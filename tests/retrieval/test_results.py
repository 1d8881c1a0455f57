"""The TREC run file."""
import pytest

from dpr.retrieval.results import Retrieved, write_trec_file
from dpr.utils.io import InputError


def test_trec_run_lines(tmp_path):
    results = [Retrieved("q1", "问题", ["p3", "p1"], [0.9, 0.25]), Retrieved("q2", "别的", ["p2"], [-1.5])]
    write_trec_file(tmp_path / "run.trec", results, "mytag")
    assert (tmp_path / "run.trec").read_text().splitlines() == [
        "q1 Q0 p3 1 0.900000 mytag", "q1 Q0 p1 2 0.250000 mytag", "q2 Q0 p2 1 -1.500000 mytag"]


def test_ids_with_whitespace_are_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(InputError, match="'p 1'"):
        write_trec_file(tmp_path / "run.trec", [Retrieved("q1", "x", ["p0", "p 1"], [1.0, 0.5])], "t")
    assert not (tmp_path / "run.trec").exists()
    with pytest.raises(ValueError, match="tag"):
        write_trec_file(tmp_path / "run.trec", [], "two words")
