from dpr.data.exclusion import exclusion, exclusion_of_ctxs


def test_ids_texts_and_siblings():
    e = exclusion([("doc-3", "北京", ""), (None, "上海", "城市"), ("p9", None, "")], sibling_ids=False)
    assert e.rejects_id("doc-3") and e.rejects_id("p9") and not e.rejects_id("doc-4") and not e.rejects_id(None)
    assert e.rejects("x", "北京") and e.rejects("y", "上海", "城市") and e.rejects("z", "城市 上海")
    assert not e.rejects("y", "上海") and not e.rejects("doc-4", "天津")
    s = exclusion([("doc-3", "北京", "")], sibling_ids=True)
    assert s.rejects_id("doc-4") and s.rejects_id("doc") and not s.rejects_id("docs-1")


def test_from_dpr_ctxs():
    e = exclusion_of_ctxs([{"title": "T", "text": "a", "passage_id": "h-1"}, {"text": "b"}], sibling_ids=True)
    assert e.ids == {"h-1"} and e.paragraphs == {"h"} and e.texts == {"T a", "b"}
