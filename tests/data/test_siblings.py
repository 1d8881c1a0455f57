from dpr.data.siblings import paragraph_of, sibling_key


def test_paragraph_of():
    assert paragraph_of("0a1b-3") == "0a1b"
    assert paragraph_of("a-b-12") == "a-b"
    assert paragraph_of("5bc347ff17d488f1704e2893c9e8ecfa") is None
    assert paragraph_of("x-y") is None and paragraph_of("-3") is None


def test_sibling_key():
    assert sibling_key("abc-3") == "abc" and sibling_key("abc") == "abc" and sibling_key("abc-x") == "abc-x"
