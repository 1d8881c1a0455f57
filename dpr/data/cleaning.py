"""Text cleaning shared by every reader: control and XML-illegal characters out, empty / NaN texts recognised."""
from __future__ import annotations

import math
import re

# Whitespace-like controls become a space (they would break the TSV files); other C0/C1 controls, lone surrogates
# and the non-characters U+FFFE/U+FFFF (all illegal in XML 1.0) are dropped.
_AS_SPACE = re.compile(r"[\t\n\r\x0b\x0c\x85\u2028\u2029]+")
_DROP = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]")
_NEEDS_WORK = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")
_EMPTY_MARKERS = frozenset({"", "nan", "null", "none"})


def clean_text(text: str) -> str:
    """Remove control / XML-illegal characters (whitespace controls become one space) and strip the ends."""
    if _NEEDS_WORK.search(text):
        text = _DROP.sub("", _AS_SPACE.sub(" ", text))
    return text.strip()


def is_empty(text: object) -> bool:
    """True for None, NaN, blank text and the "nan" / "null" / "none" placeholders found in the DuReader collection."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return True
    return str(text).strip().lower() in _EMPTY_MARKERS
