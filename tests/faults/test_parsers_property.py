"""Property tests (hypothesis) for the file parsers and the official metric: round trips with arbitrary text, and
arbitrary bytes either parse or raise InputError naming the file and line - never another exception."""
from __future__ import annotations

import io
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpr.data.cleaning import clean_text
from dpr.data.formats import PassagesWriter, read_dpr_json, read_passages_tsv, read_questions, write_dpr_json
from dpr.eval.dureader import evaluate
from dpr.utils.io import InputError, iter_jsonl

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# any text, with the characters that break line/column formats made likely
utf8 = st.text(st.one_of(st.characters(codec="utf-8"), st.sampled_from(list("\t\n\r\x00\x85\u2028\ufeff"))))
nasty = st.text(st.one_of(st.characters(), st.sampled_from(list("\t\n\r\x00\x0b\x0c\x1c\x1e\x7f\x85\u2028\u2029\ufeff\ufffe"))))
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | nasty,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(nasty, inner, max_size=3),
                           max_leaves=8)


WORK = Path(tempfile.mkdtemp(prefix="dpr-prop-"))  # one file per suffix, overwritten by every example


@pytest.fixture(scope="module", autouse=True)
def _cleanup():
    yield
    shutil.rmtree(WORK, ignore_errors=True)


def _tmp(data: bytes, suffix: str) -> Path:
    path = WORK / f"f{suffix}"
    path.write_bytes(data)
    return path


@SETTINGS
@given(st.lists(st.tuples(nasty, nasty, nasty), max_size=8))
def test_passages_tsv_round_trip_of_cleaned_text(rows):
    buf = io.StringIO()
    writer = PassagesWriter(buf)
    for pid, text, title in rows:
        writer.write(pid, text, title)
    path = _tmp(buf.getvalue().encode("utf-8", "surrogatepass"), ".tsv")
    assert list(read_passages_tsv(path)) == [(clean_text(p), clean_text(t), clean_text(ti)) for p, t, ti in rows]


@SETTINGS
@given(st.lists(st.fixed_dictionaries({"question": utf8, "question_id": utf8,
                                       "positive_ctxs": st.lists(st.fixed_dictionaries(
                                           {"text": utf8, "title": utf8, "passage_id": utf8}), max_size=2)}),
                max_size=5))
def test_dpr_json_round_trip(entries):
    path = WORK / "dpr.json"
    write_dpr_json(path, entries)
    assert read_dpr_json(path) == entries


@SETTINGS
@given(st.lists(st.dictionaries(nasty, JSON_VALUES, max_size=4), max_size=6), st.sets(st.integers(0, 8)))
def test_jsonl_reader_yields_every_object_with_its_line(objects, blank_after):
    lines, expected = [], []
    for i, obj in enumerate(objects):
        lines.append(json.dumps(obj, ensure_ascii=bool(i % 2)))
        expected.append((len(lines), obj))
        if i in blank_after:
            lines.append("   ")
    path = _tmp("\n".join(lines).encode("utf-8", "surrogatepass"), ".jsonl")
    if any("\ud800" <= c <= "\udfff" for line in lines for c in line):
        return  # a lone surrogate cannot be UTF-8: covered by the arbitrary-bytes test below
    assert list(iter_jsonl(path)) == expected


def _only_input_errors(path: Path, read) -> None:
    try:
        read(path)
    except InputError as e:
        assert str(e).startswith(str(path)) and e.path == str(path)


@SETTINGS
@given(st.binary(max_size=200) | nasty.map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_arbitrary_bytes_give_data_or_an_input_error(data):
    _only_input_errors(_tmp(data, ".jsonl"), lambda p: list(iter_jsonl(p)))
    _only_input_errors(_tmp(b"id\ttext\ttitle\n" + data, ".tsv"), lambda p: list(read_passages_tsv(p)))
    _only_input_errors(_tmp(data, ".q"), read_questions)


question_files = st.one_of(
    st.lists(st.dictionaries(st.sampled_from(["question", "question_id", "positive_ctxs", "answer_paragraphs"]),
                             JSON_VALUES), max_size=3).map(json.dumps),  # DPR JSON lists of odd entries
    st.lists(st.dictionaries(st.sampled_from(["question", "question_id", "answer_paragraphs"]), JSON_VALUES),
             min_size=1, max_size=3).map(lambda rows: "\n".join("{" + json.dumps(r)[1:] for r in rows)))


@SETTINGS
@given(question_files)
def test_odd_question_files_give_rows_or_an_input_error(text):
    path = _tmp(text.encode("utf-8", "surrogatepass"), ".json")
    try:
        rows = read_questions(path)
    except InputError as e:
        assert e.path == str(path)
        return
    for qid, question, gold in rows:
        assert isinstance(qid, str) and isinstance(question, str)
        assert gold is None or all(isinstance(p, str) for p in gold)


# ----- the metric -----

pids = st.sampled_from([f"p{i}" for i in range(60)])
qids = st.sampled_from([f"q{i}" for i in range(10)])
references = st.dictionaries(qids, st.sets(pids, min_size=1, max_size=3), min_size=1)
predictions = st.dictionaries(qids, st.lists(pids, max_size=60, unique=True), min_size=1)


@SETTINGS
@given(references, predictions, st.randoms())
def test_metric_is_bounded_and_invariant_to_query_order(ref, preds, rnd):
    if not set(ref) & set(preds):
        return
    got = evaluate(ref, preds)
    for key in ("MRR@10", "recall@1", "recall@50"):
        assert 0.0 <= got[key] <= 1.0
    items = list(preds.items())
    rnd.shuffle(items)
    ref_items = list(ref.items())
    rnd.shuffle(ref_items)
    assert evaluate(dict(ref_items), dict(items)) == pytest.approx(got)


@SETTINGS
@given(references, predictions, st.data())
def test_non_relevant_pids_after_rank_50_or_after_the_first_hit_change_nothing(ref, preds, data):
    if not set(ref) & set(preds):
        return
    base = evaluate(ref, preds)
    changed = {}
    for q, ranked in preds.items():
        gold = ref.get(q, set())
        first = next((i for i, p in enumerate(ranked[:50]) if p in gold), None)
        filler = [f"x{i}" for i in range(60)]
        if first is None:  # no hit in the top 50: a non-relevant pid anywhere keeps it so
            pos = data.draw(st.integers(0, len(ranked)))
            changed[q] = ranked[:pos] + ["junk"] + ranked[pos:]
        else:  # pad to 50 with non-relevant pids, then anything (even relevant) after rank 50
            head = ranked[: first + 1] + [p for p in ranked[first + 1: 50]]
            changed[q] = (head + filler)[:50] + data.draw(st.lists(pids, max_size=5))
    assert evaluate(ref, changed) == pytest.approx(base)


@SETTINGS
@given(references, predictions, st.data())
def test_moving_the_first_hit_up_never_lowers_the_score(ref, preds, data):
    if not set(ref) & set(preds):
        return
    base = evaluate(ref, preds)
    better = dict(preds)
    for q, ranked in preds.items():
        hits = [i for i, p in enumerate(ranked) if p in ref.get(q, set())]
        if hits:
            i = hits[0]
            j = data.draw(st.integers(0, i))
            better[q] = ranked[:j] + [ranked[i]] + ranked[j:i] + ranked[i + 1:]
    got = evaluate(ref, better)
    for key in ("MRR@10", "recall@1", "recall@50"):
        assert got[key] >= base[key] - 1e-12
