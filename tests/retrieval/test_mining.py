from dpr.retrieval.mining import mine_negatives, paragraph_key


def test_paragraph_key():
    assert paragraph_key("abc-3") == "abc" and paragraph_key("a-b-12") == "a-b"
    assert paragraph_key("e36312628ef07fd6ef1f9d054bd88bdd") == "e36312628ef07fd6ef1f9d054bd88bdd"
    assert paragraph_key("abc-x") == "abc-x"


def test_positive_given_as_paragraph_excludes_all_its_passages():
    passages = {p: (f"text {p}", "") for p in ["h1-0", "h1-1", "h2-0", "h3-0", "h10-0"]}
    entry = {"question": "q", "positive_ctxs": [{"title": "", "text": "whole paragraph", "passage_id": "h1"}]}
    negs = mine_negatives(entry, ["h1-1", "h2-0", "h1-0", "h10-0", "h3-0"], passages, skip_top=0, max_negatives=None)
    assert [n["passage_id"] for n in negs] == ["h2-0", "h10-0", "h3-0"]
    assert negs[0] == {"title": "", "text": "text h2-0", "passage_id": "h2-0"}


def test_skip_top_counts_ranks_not_negatives():
    passages = {p: (p, "") for p in ["a-0", "b-0", "c-0", "d-0"]}
    entry = {"question": "q", "positive_ctxs": [{"title": "", "text": "a-0", "passage_id": "a-0"}]}
    negs = mine_negatives(entry, ["a-0", "b-0", "c-0", "d-0"], passages, skip_top=2, max_negatives=1)
    assert [n["passage_id"] for n in negs] == ["c-0"]
