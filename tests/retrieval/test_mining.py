import pytest

from dpr.retrieval.mining import mine_negatives, with_mined_negatives


def _entry(*positives):
    return {"question": "q", "positive_ctxs": [{"title": t, "text": x, "passage_id": p} for p, x, t in positives]}


def test_positive_given_as_paragraph_excludes_all_its_passages_under_the_sibling_rule():
    passages = {p: (f"text {p}", "") for p in ["h1-0", "h1-1", "h2-0", "h3-0", "h10-0"]}
    entry = _entry(("h1", "whole paragraph", ""))
    negs = mine_negatives(entry, ["h1-1", "h2-0", "h1-0", "h10-0", "h3-0"], passages, skip_top=0, max_negatives=None,
                          sibling_ids=True)
    assert [n["passage_id"] for n in negs] == ["h2-0", "h10-0", "h3-0"]
    assert negs[0] == {"title": "", "text": "text h2-0", "passage_id": "h2-0"}


def test_ids_ending_in_digits_are_independent_without_the_sibling_rule():
    passages = {f"doc-{i}": (f"text {i}", "") for i in range(10)}
    entry = _entry(("doc-3", "text 3", ""))
    ranked = [f"doc-{i}" for i in (3, 4, 5, 0, 9)]
    negs = mine_negatives(entry, ranked, passages, skip_top=0, max_negatives=None, sibling_ids=False)
    assert [n["passage_id"] for n in negs] == ["doc-4", "doc-5", "doc-0", "doc-9"]
    assert mine_negatives(entry, ranked, passages, skip_top=0, max_negatives=None, sibling_ids=True) == []


def test_identical_encoded_text_under_another_id_is_not_a_negative():
    passages = {"a-0": ("故宫在北京", "故宫"), "b-0": ("故宫在北京", "故宫"), "c-0": ("故宫在北京", ""),
                "d-0": ("故宫 故宫在北京", ""), "e-0": ("长城", "")}
    entry = _entry(("a-0", "故宫在北京", "故宫"))
    negs = mine_negatives(entry, ["a-0", "b-0", "c-0", "d-0", "e-0"], passages, skip_top=0, max_negatives=None,
                          sibling_ids=False)
    # b-0: same title and text; d-0: no title, but the tower reads the same "故宫 故宫在北京"; c-0 differs (no title)
    assert [n["passage_id"] for n in negs] == ["c-0", "e-0"]


def test_skip_top_counts_ranks_not_negatives():
    passages = {p: (p, "") for p in ["a-0", "b-0", "c-0", "d-0"]}
    entry = _entry(("a-0", "a-0", ""))
    negs = mine_negatives(entry, ["a-0", "b-0", "c-0", "d-0"], passages, skip_top=2, max_negatives=1,
                          sibling_ids=False)
    assert [n["passage_id"] for n in negs] == ["c-0"]


def test_the_sibling_choice_must_be_made():
    with pytest.raises(TypeError):
        with_mined_negatives([_entry(("a-0", "x", ""))], [["b-0"]], {"b-0": ("y", "")}, 0, None)
