"""CMRC2018 (SQuAD-style) -> the DuReader-retrieval release JSON layout: sentence-packed passages, span relevance."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dpr.data.cleaning import clean_text
from dpr.data.collection_meta import PARAGRAPH_K, write_meta
from dpr.utils.io import InputError, atomic_write, check_writable_dir, read_json

logger = logging.getLogger(__name__)

SPLITS = {"train": "cmrc2018_train.json", "dev": "cmrc2018_dev.json", "test": "cmrc2018_trial.json"}
SOURCE_HINT = ("get cmrc2018_train.json, cmrc2018_dev.json and cmrc2018_trial.json from the public ymcui/cmrc2018 "
               "repository, folder squad-style-data/ (or run `python data/fetch_cmrc2018.py`), or set CMRC2018_DIR")
_SENTENCE = re.compile(r"[^。！？!?]*[。！？!?]+[”’\"」』）)]*|[^。！？!?]+")
_CLAUSE = re.compile(r"[^，；,;：:]*[，；,;：:]+|[^，；,;：:]+")


def cmrc_candidates(repo_root: Path) -> list[Path]:
    """Where CMRC2018 is looked for, in order: $CMRC2018_DIR, ../shared/data/cmrc2018 beside the repo, data/cmrc2018."""
    env = os.environ.get("CMRC2018_DIR")
    return ([Path(env)] if env else []) + [repo_root.parent / "shared" / "data" / "cmrc2018", repo_root / "data" / "cmrc2018"]


def default_cmrc_dir(repo_root: Path) -> Path:
    """$CMRC2018_DIR when set, else the first existing candidate directory, else data/cmrc2018."""
    first, *rest = cmrc_candidates(repo_root)
    if os.environ.get("CMRC2018_DIR"):
        return first
    return next((d for d in (first, *rest) if d.is_dir()), rest[-1] if rest else first)


def _pieces(pattern: re.Pattern, text: str, start: int, end: int) -> list[tuple[int, int]]:
    return [(start + m.start(), start + m.end()) for m in pattern.finditer(text[start:end]) if m.end() > m.start()]


def _units(text: str, max_chars: int) -> list[tuple[int, int]]:
    """Sentence spans; a sentence over max_chars is cut at clause marks, then (if still too long) every max_chars."""
    out: list[tuple[int, int]] = []
    for s, e in _pieces(_SENTENCE, text, 0, len(text)):
        if e - s <= max_chars:
            out.append((s, e))
            continue
        for cs, ce in _pieces(_CLAUSE, text, s, e):
            out.extend((i, min(i + max_chars, ce)) for i in range(cs, ce, max_chars))
    return out


def split_paragraph(text: str, max_chars: int = 200) -> list[tuple[int, int]]:
    """[start, end) spans of passages: consecutive sentences packed greedily up to max_chars, blank edges dropped."""
    spans: list[tuple[int, int]] = []
    for s, e in _units(text, max_chars):
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e == s:
            continue
        if spans and e - spans[-1][0] <= max_chars:
            spans[-1] = (spans[-1][0], e)
        else:
            spans.append((s, e))
    return spans


def paragraph_hash(context: str) -> str:
    return hashlib.md5(context.encode("utf-8")).hexdigest()


def locate_answer(context: str, text: str, start: int) -> tuple[int, str] | None:
    """(start of the answer in context, how: 'exact' | 'searched') or None when the text is not in the context."""
    if not text:
        return None
    if 0 <= start and context[start:start + len(text)] == text:
        return start, "exact"
    hits = [m.start() for m in re.finditer(re.escape(text), context)]
    if not hits:
        return None
    return min(hits, key=lambda h: abs(h - start)), "searched"


@dataclass
class Passage:
    pid: str
    text: str
    start: int
    end: int


def _iter_paragraphs(path: Path) -> Iterator[tuple[str, dict]]:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise InputError(path, "expected SQuAD-style JSON: {\"data\": [{\"paragraphs\": [...]}]}")
    for article in data["data"]:
        for para in article.get("paragraphs", []):
            if not isinstance(para, dict) or "context" not in para:
                raise InputError(path, f"a paragraph without 'context' in article {article.get('id', '?')}")
            yield article.get("title", ""), para


def convert_split(path: Path, max_chars: int, stats: Counter) -> tuple[list[dict], list[Passage]]:
    """Questions (release JSON dicts) and passages of one CMRC file; answer problems are counted in `stats`."""
    questions: list[dict] = []
    passages: list[Passage] = []
    for _title, para in _iter_paragraphs(path):
        context = para["context"]
        h = paragraph_hash(context)
        spans = split_paragraph(context, max_chars)
        cut = [Passage(f"{h}-{k}", clean_text(context[s:e]), s, e) for k, (s, e) in enumerate(spans)]
        passages.extend(cut)
        stats["paragraphs"] += 1
        for qa in para.get("qas", []):
            gold: dict[str, Passage] = {}
            answers: list[str] = []
            for ans in qa.get("answers", []):
                text = str(ans.get("text", ""))
                found = locate_answer(context, text, int(ans.get("answer_start", -1)))
                stats["answers"] += 1
                if found is None:
                    stats["answers_not_in_context"] += 1
                    continue
                a_start, how = found
                stats[f"answers_{how}"] += 1
                if text not in answers:
                    answers.append(text)
                a_end = a_start + len(text)
                for p in cut:
                    if p.start < a_end and a_start < p.end:
                        gold.setdefault(p.pid, p)
            stats["questions"] += 1
            question = clean_text(str(qa.get("question", "")))
            if not question:
                stats["questions_empty"] += 1
                continue
            if not gold:
                stats["questions_without_usable_answer"] += 1
                continue
            questions.append({
                "question_id": str(qa["id"]), "question": question, "answers": answers,
                "answer_paragraphs": [{"paragraph_id": p.pid, "paragraph_text": p.text} for p in gold.values()],
            })
            stats["positives"] += len(gold)
    return questions, passages


def build(cmrc_dir: str | os.PathLike, output_dir: str | os.PathLike, max_chars: int = 200) -> dict[str, dict]:
    """Write train.json / dev.json / test.json (trial, labelled), passage_collection.json and collection_meta.json
    (ids `<paragraph>-<k>`: the sibling rule applies downstream); return per-split stats."""
    cmrc_dir, output_dir = Path(cmrc_dir), Path(output_dir)
    missing = [name for name in SPLITS.values() if not (cmrc_dir / name).is_file()]
    if missing:
        raise InputError(cmrc_dir, f"missing {', '.join(missing)}: {SOURCE_HINT}")
    check_writable_dir(output_dir)
    report: dict[str, dict] = {}
    seen: set[str] = set()
    with atomic_write(output_dir / "passage_collection.json") as coll:
        for split, name in SPLITS.items():
            stats: Counter = Counter()
            questions, passages = convert_split(cmrc_dir / name, max_chars, stats)
            with atomic_write(output_dir / f"{split}.json") as f:
                for q in questions:
                    f.write(json.dumps(q, ensure_ascii=False) + "\n")
            for p in passages:
                if p.pid in seen:
                    stats["duplicate_passages"] += 1
                    continue
                seen.add(p.pid)
                coll.write(json.dumps({"paragraph_id": p.pid, "paragraph_text": p.text}, ensure_ascii=False) + "\n")
                stats["passages"] += 1
            stats["questions_written"] = len(questions)
            report[split] = dict(sorted(stats.items()))
            logger.info("%s: %s", split, report[split])
    write_meta(output_dir, {"id_scheme": PARAGRAPH_K, "made_by": "dpr.data.cmrc.build", "source": str(cmrc_dir),
                            "source_files": list(SPLITS.values()), "max_chars": max_chars,
                            "ids": "<md5 of the CMRC2018 paragraph>-<k>, k = passage index within the paragraph"})
    return report
