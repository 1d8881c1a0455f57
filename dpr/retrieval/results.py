"""What dense_retriever writes: the official submission {qid: [pids]}, a rerank file (pids, texts, scores per
question), a TREC run file for ranx / pytrec_eval / trec_eval, and the metrics when the questions carry labels."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from dpr.utils.io import InputError, atomic_write, write_json


@dataclass
class Retrieved:
    """One question's ranked passages."""

    qid: str
    question: str
    pids: list[str]
    scores: list[float]
    parts: list[dict] | None = None  # per passage, extra fields for the rerank file (e.g. hybrid's two scores)


def submission(results: list[Retrieved]) -> dict[str, list[str]]:
    """The official DuReader-retrieval prediction layout: {question_id: [passage ids, best first]}."""
    return {r.qid: r.pids for r in results}


def write_submission(path: str | os.PathLike, results: list[Retrieved]) -> None:
    write_json(path, submission(results))


def write_rerank_file(path: str | os.PathLike, results: list[Retrieved],
                      passages: dict[str, tuple[str, str]] | None = None) -> None:
    """JSON lines, one question each: {"question_id", "question", "passages": [{"rank", "passage_id", "score",
    "text", "title"}]} (text/title only when the collection file was given; plus each passage's `parts`)."""
    with atomic_write(path) as f:
        for r in results:
            ranked = []
            for rank, (pid, score) in enumerate(zip(r.pids, r.scores), 1):
                item = {"rank": rank, "passage_id": pid, "score": round(float(score), 6)}
                if r.parts is not None:
                    item.update(r.parts[rank - 1])
                if passages is not None:
                    text, title = passages[pid]
                    item.update(text=text, title=title)
                ranked.append(item)
            f.write(json.dumps({"question_id": r.qid, "question": r.question, "passages": ranked},
                               ensure_ascii=False) + "\n")


def write_trec_file(path: str | os.PathLike, results: list[Retrieved], tag: str) -> None:
    """TREC run lines `qid Q0 pid rank score tag` (rank from 1, best first). Ids with whitespace would break the
    columns, so they are refused (nothing is written). trec_eval re-sorts by score, so equal scores may swap."""
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"the TREC run tag must be one word, not {tag!r}")
    for r in results:
        for kind, value in (("question", r.qid), *(("passage", pid) for pid in r.pids)):
            if not value or any(c.isspace() for c in value):
                raise InputError(path, f"{kind} id {value!r} is empty or contains whitespace: a TREC run file "
                                       f"cannot hold it (question {r.qid!r})")
    with atomic_write(path) as f:
        for r in results:
            for rank, (pid, score) in enumerate(zip(r.pids, r.scores), 1):
                f.write(f"{r.qid} Q0 {pid} {rank} {float(score):.6f} {tag}\n")
