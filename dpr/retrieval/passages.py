"""Passage texts for the ids a run needs: read by streaming passages.tsv once (a batch run), or row by row from byte
offsets found once (repeated questions); the whole collection's texts never sit in RAM."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from dpr.data.formats import read_passages_tsv
from dpr.utils.io import InputError


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


class PassageStore:
    """Random access to the rows of a passages.tsv: the byte offset of every row is found in one pass (ids kept,
    texts not), then each lookup reads one line and checks that its id is the one asked for."""

    def __init__(self, ctx_file: str | os.PathLike):
        self.path = Path(ctx_file)
        offsets: list[int] = []
        self.rows: dict[str, int] = {}
        next(read_passages_tsv(ctx_file, stop=0), None)  # the header, checked as everywhere
        with open(self.path, "rb") as f:
            pos = len(f.readline())
            for n, raw in enumerate(f, 2):
                pid = raw.split(b"\t", 1)[0].decode("utf-8", errors="replace")
                if pid in self.rows:
                    raise InputError(ctx_file, f"passage id {pid!r} appears twice", line=n)
                self.rows[pid] = len(offsets)
                offsets.append(pos)
                pos += len(raw)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self._size = os.path.getsize(self.path)

    def __len__(self) -> int:
        return len(self.offsets)

    def __contains__(self, pid: str) -> bool:
        return pid in self.rows

    def get(self, pids: Iterable[str]) -> dict[str, tuple[str, str]]:
        """{id: (text, title)} for these ids; an id not in the file, or a file changed since it was indexed, is an
        InputError naming the file (and line)."""
        if os.path.getsize(self.path) != self._size:
            raise InputError(self.path, "the file changed since its rows were indexed; load it again")
        found: dict[str, tuple[str, str]] = {}
        with open(self.path, "rb") as f:
            for pid in pids:
                row = self.rows.get(pid)
                if row is None:
                    raise InputError(self.path, f"passage id {pid!r} is not in this file: embeddings from another "
                                                f"collection?")
                f.seek(int(self.offsets[row]))
                line = row + 2
                try:
                    cols = f.readline().decode("utf-8").rstrip("\r\n").split("\t")
                except UnicodeDecodeError as e:
                    raise InputError(self.path, f"not valid UTF-8 ({e.reason})", line=line) from None
                if len(cols) != 3:
                    raise InputError(self.path, f"expected 3 tab-separated columns (id, text, title), got "
                                                f"{len(cols)}", line=line)
                if cols[0] != pid:
                    raise InputError(self.path, f"row of {pid!r} holds {cols[0]!r}: the file changed since its rows "
                                                f"were indexed", line=line)
                found[pid] = (cols[1], cols[2])
        return found


def check_in_collection(ctx_file: str | os.PathLike, missing: Iterable[str], vectors: str | None = None) -> None:
    """The passage-id check of every search: ids of the vectors (`vectors`: the first one found missing among all of
    theirs) or of the results (every one found missing) that ctx_file lacks mean embeddings of another collection."""
    missing = sorted(missing)
    if not missing:
        return
    said = (f"passage id {missing[0]!r} of {vectors} is" if vectors is not None else
            f"{len(missing)} retrieved passage ids are")
    example = f" (e.g. {missing[0]!r})" if vectors is None else ""
    raise InputError(ctx_file, f"{said} not in this file{example}: embeddings from another collection?")
