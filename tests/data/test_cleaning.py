import math

from dpr.data.cleaning import clean_text, is_empty


def test_controls_and_xml_illegal_characters():
    assert clean_text("北京\t是\n首都\r\n") == "北京 是 首都"
    assert clean_text("a\x00b\x07c\x1fd\x7fe\x9ff\ufffeg\uffffh") == "abcdefgh"
    assert clean_text("lone \ud800 surrogate") == "lone  surrogate"
    assert clean_text("  正常的文本。 ") == "正常的文本。"
    assert clean_text("\u2028line\u2029sep") == "line sep"


def test_empty_and_nan_markers():
    for v in (None, "", "   ", "nan", "NaN", "null", "None", math.nan):
        assert is_empty(v), v
    for v in ("0", "nana", "北京", 12):
        assert not is_empty(v), v
