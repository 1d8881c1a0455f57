"""Passage texts for the ids a run needs, read by streaming passages.tsv (the whole collection never sits in RAM)."""
from __future__ import annotations

import os
from typing import Iterable

from dpr.data.formats import read_passages_tsv


def lookup_passages(ctx_file: str | os.PathLike, wanted: Iterable[str]) -> dict[str, tuple[str, str]]:
    """{id: (text, title)} for the wanted ids found in ctx_file."""
    wanted = set(wanted)
    found: dict[str, tuple[str, str]] = {}
    for pid, text, title in read_passages_tsv(ctx_file):
        if pid in wanted:
            found[pid] = (text, title)
            if len(found) == len(wanted):
                break
    return found
