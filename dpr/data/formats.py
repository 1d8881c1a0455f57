"""The file formats every step shares: passages.tsv, DPR JSON and question files."""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import IO, Any

from dpr.data.cleaning import clean_text
from dpr.utils.io import InputError, atomic_write, count_lines, iter_json_array, iter_jsonl, iter_lines

PASSAGES_HEADER = "id\ttext\ttitle"
QuestionRow = tuple[str, str, list[str] | None]


def read_passages_tsv(path: str | os.PathLike, start: int = 0,
                      stop: int | None = None) -> Iterator[tuple[str, str, str]]:
    """Yield (id, text, title) from a passages.tsv with header `id\\ttext\\ttitle`; bad lines name file and line.

    `start` / `stop` select passage rows [start, stop): the rows before `start` are skipped as raw bytes (counted,
    never decoded or split), so a shard worker parses only its own rows.
    """
    lines = iter_lines(path, skip=start)
    first = next(lines, None)
    if first is None or first[1] != PASSAGES_HEADER:
        got = "an empty file" if first is None else repr(first[1][:80])
        raise InputError(path, f"expected the header {PASSAGES_HEADER!r}, got {got}", line=1)
    if stop is not None:
        lines = islice(lines, max(0, stop - start))
    for n, line in lines:
        cols = line.split("\t")
        if len(cols) != 3:
            raise InputError(path, f"expected 3 tab-separated columns (id, text, title), got {len(cols)}", line=n)
        yield cols[0], cols[1], cols[2]


def count_passages_tsv(path: str | os.PathLike, digest=None) -> int:
    """Passage rows of a passages.tsv (header checked), counted as line breaks in raw bytes: no decoding or parsing
    (`digest`, a hashlib object, is fed the whole file on the way)."""
    next(read_passages_tsv(path, stop=0), None)  # checks the header
    return count_lines(path, digest=digest) - 1


def tsv_field(value: str) -> str:
    """A value safe for one TSV column (no tabs or newlines)."""
    return clean_text(value)


class PassagesWriter:
    """Write passages.tsv rows (header first) into an open text file."""

    def __init__(self, f: IO[str]):
        self.f = f
        self.count = 0
        f.write(PASSAGES_HEADER + "\n")

    def write(self, pid: str, text: str, title: str = "") -> None:
        self.f.write(f"{tsv_field(pid)}\t{tsv_field(text)}\t{tsv_field(title)}\n")
        self.count += 1


def dpr_passage(pid: str | None, text: str, title: str = "") -> dict[str, Any]:
    return {"title": title, "text": text, "passage_id": pid}


class DPRJsonWriter:
    """Stream a DPR JSON list to `path` atomically, one entry per line, so memory does not grow with the file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.count = 0
        self._ctx = atomic_write(self.path)
        self._f: IO[str] | None = None

    def __enter__(self) -> DPRJsonWriter:
        self._f = self._ctx.__enter__()
        self._f.write("[")
        return self

    def write(self, entry: dict[str, Any]) -> None:
        assert self._f is not None
        self._f.write(("\n" if self.count == 0 else ",\n") + json.dumps(entry, ensure_ascii=False))
        self.count += 1

    def __exit__(self, *exc: Any) -> bool | None:
        assert self._f is not None
        if exc[0] is None:
            self._f.write("\n]\n")
        return self._ctx.__exit__(*exc)


def write_dpr_json(path: str | os.PathLike, entries: Iterable[dict[str, Any]]) -> int:
    with DPRJsonWriter(path) as w:
        for e in entries:
            w.write(e)
    return w.count


def iter_dpr_json(path: str | os.PathLike) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """Stream (entry number, line, entry) from a DPR JSON list of {"question", "positive_ctxs", ...} without loading
    it whole; anything else names the file, line and entry. The one reader of DPR JSON."""
    for n, line, entry in iter_json_array(path):
        if not isinstance(entry, dict) or not isinstance(entry.get("question"), str):
            raise InputError(path, f"entry {n} is not an object with a 'question' string", line=line)
        yield n, line, entry


def read_dpr_json(path: str | os.PathLike) -> list[dict[str, Any]]:
    """A DPR JSON list, whole (see iter_dpr_json)."""
    return [entry for _, _, entry in iter_dpr_json(path)]


def passage_input(text: str, title: str | None = "") -> str:
    """The string a passage is encoded from, in training and in encoding alike: 'title text', or the text alone."""
    title = (title or "").strip()
    return f"{title} {text}" if title else text


def release_gold(path: str | os.PathLike, obj: dict, line: int) -> list[str] | None:
    """The paragraph ids of a release-JSON question's answer_paragraphs (None when the line has no labels)."""
    paras = obj.get("answer_paragraphs")
    if paras is None:
        return None
    if not isinstance(paras, list) or not all(isinstance(p, dict) and "paragraph_id" in p for p in paras):
        raise InputError(path, "answer_paragraphs must be a list of objects with a paragraph_id", line=line)
    return [str(p["paragraph_id"]) for p in paras]


def release_question(path: str | os.PathLike, obj: dict, line: int) -> tuple[str, str]:
    """(question_id, cleaned question) of a release-JSON line; a missing key names file and line."""
    for key in ("question_id", "question"):
        if key not in obj:
            raise InputError(path, f"missing key {key!r}", line=line)
    return str(obj["question_id"]), clean_text(str(obj["question"]))


def _first_char(path: str | os.PathLike) -> str | None:
    for _, line in iter_lines(path):
        if line.strip():
            return line.lstrip()[0]
    return None


def read_questions(path: str | os.PathLike) -> list[QuestionRow]:
    """(qid, question, gold pids | None) from release JSON lines, a DPR JSON list or a `qid\\tquestion` TSV."""
    first = _first_char(path)
    if first is None:
        raise InputError(path, "no questions in this file (it is empty)")
    out: list[QuestionRow] = []
    if first == "[":
        for i, e in enumerate(read_dpr_json(path)):
            qid = str(e.get("question_id", i))
            pos = e.get("positive_ctxs")
            if pos is not None and not (isinstance(pos, list) and all(isinstance(c, dict) for c in pos)):
                raise InputError(path, f"entry {i}: positive_ctxs must be a list of objects")
            gold = None if not pos else [str(c["passage_id"]) for c in pos if c.get("passage_id") is not None] or None
            out.append((qid, clean_text(str(e["question"])), gold))
    elif first == "{":
        for n, obj in iter_jsonl(path):
            qid, question = release_question(path, obj, n)
            out.append((qid, question, release_gold(path, obj, n)))
    else:
        for n, line in iter_lines(path):
            if not line.strip() or (not out and line.split("\t") == ["qid", "question"]):
                continue
            cols = line.split("\t")
            if len(cols) != 2:
                raise InputError(path, f"expected 2 tab-separated columns (qid, question), got {len(cols)}", line=n)
            out.append((cols[0], clean_text(cols[1]), None))
    if not out:
        raise InputError(path, "no questions in this file")
    return out
