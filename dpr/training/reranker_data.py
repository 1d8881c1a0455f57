"""The reranker's data: each question's group (its positive, then `group_size - 1` negatives drawn from its
hard_negative_ctxs, topped up from negative_ctxs, then from random passages of the file: the bi-encoder's sampling
rule, `BiEncoderData.sample_indices`), with every negative checked against the one exclusion rule
(dpr.data.exclusion: never a positive by id or text, nor under the sibling rule a passage of a positive's paragraph);
and the dev candidates that validation reranks."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dpr.data.exclusion import Exclusion, exclusion_of_ctxs
from dpr.data.formats import iter_dpr_json
from dpr.training.data import BiEncoderData, PassageStore, _contexts, _Ragged
from dpr.utils.io import InputError


class RerankData(BiEncoderData):
    """BiEncoderData whose negatives pass each question's Exclusion: listed negatives that a positive's rule rejects
    are dropped when the file is read (counted in `rejected_negatives`), and random fillers are drawn only among
    passages it allows."""

    def __init__(self, path: str | os.PathLike, limit: int = 0, sibling_ids: bool = False,
                 run_negatives: dict[str, list[dict]] | None = None):
        """Read `path`; `run_negatives` (question_id -> passages, from read_run_negatives) stand in for the
        hard_negative_ctxs of a question that lists none."""
        self.path = str(path)
        self.questions: list[str] = []
        self.passages = PassageStore()
        self.positives, self.hard, self.other = _Ragged(), _Ragged(), _Ragged()
        self.exclusions: list[Exclusion] = []
        self.pids: list[str | None] = []  # per stored passage
        self.sibling_ids = sibling_ids
        self.rejected_negatives = 0
        skipped = 0
        for _, line, item in iter_dpr_json(path):
            if limit and len(self.questions) == limit:
                break
            pos = _contexts(path, item, "positive_ctxs", line)
            if not pos:
                skipped += 1
                continue
            excl = exclusion_of_ctxs(pos, sibling_ids)
            self.questions.append(item["question"])
            self.exclusions.append(excl)
            self.positives.append([self._add(c) for c in pos])
            for key, part in (("hard_negative_ctxs", self.hard), ("negative_ctxs", self.other)):
                kept, listed = [], _contexts(path, item, key, line)
                if key == "hard_negative_ctxs" and not listed and run_negatives:
                    listed = run_negatives.get(str(item.get("question_id")), [])
                for c in listed:
                    pid = None if c.get("passage_id") in (None, "") else str(c["passage_id"])
                    if excl.rejects(pid, c["text"], c.get("title")):
                        self.rejected_negatives += 1
                    else:
                        kept.append(self._add(c))
                part.append(kept)
        self.skipped_no_positive = skipped
        for part in (self.passages, self.positives, self.hard, self.other):
            part.freeze()
        if not self.questions:
            raise InputError(path, "no question with a positive passage")

    def _add(self, ctx: dict) -> int:
        idx = self.passages.add(ctx)
        if idx == len(self.pids):
            self.pids.append(None if ctx.get("passage_id") in (None, "") else str(ctx["passage_id"]))
        return idx

    def allowed(self, i: int, j: int) -> bool:
        """Whether stored passage j may be a negative of question i (the exclusion rule)."""
        return not self.exclusions[i].rejects(self.pids[j], self.passages[j], "")

    def _fillers(self, i: int, count: int, exclude: set[int]) -> list[int]:
        """`count` random passages of the file that question i's exclusion allows (deterministic in i)."""
        n = len(self.passages)
        rng = np.random.default_rng([i, 7919])
        out: list[int] = []
        candidates = rng.integers(n, size=20 * count).tolist() + rng.permutation(n).tolist()  # draws, then a sweep
        for j in candidates:
            j = int(j)
            if j not in exclude and self.allowed(i, j):
                out.append(j)
                exclude.add(j)
                if len(out) == count:
                    return out
        raise InputError(self.path, f"question {i} ({self.questions[i][:40]!r}): only {len(out)} passages of the "
                                    f"file may be its negatives, {count} more needed (a smaller --group_size?)")

    def group(self, i: int, group_size: int, rng: np.random.Generator | None) -> list[int]:
        """Question i's group: its (first) positive, then group_size - 1 allowed negatives."""
        positive, negatives = self.sample_indices(i, group_size - 1, 0, rng)
        return [positive, *negatives]


def read_run_negatives(path: str | os.PathLike, k: int) -> dict[str, list[dict]]:
    """question_id -> the first k passages of a first-stage run: dense_retriever.py's rerank file (JSON lines
    {"question_id", "passages": [{"passage_id", "text", "title"}, ...]}, written with --ctx_file so that passages carry
    their texts), best first."""
    from dpr.utils.io import iter_jsonl

    out: dict[str, list[dict]] = {}
    for line, obj in iter_jsonl(path):
        passages = obj.get("passages")
        if "question_id" not in obj or not isinstance(passages, list):
            raise InputError(path, "expected {\"question_id\", \"passages\": [...]} (dense_retriever.py's rerank file)",
                             line=line)
        ctxs = []
        for p in passages[:k]:
            if not isinstance(p, dict) or not isinstance(p.get("text"), str):
                raise InputError(path, "a passage without its text: write the rerank file with --ctx_file", line=line)
            ctxs.append({"passage_id": p.get("passage_id"), "text": p["text"], "title": p.get("title") or ""})
        out[str(obj["question_id"])] = ctxs
    return out


def group_rng(seed: int, epoch: int, question: int) -> np.random.Generator:
    """The negatives' draw of one question in one epoch (independent of batch order and ranks)."""
    return np.random.default_rng([seed, epoch, int(question)])


@dataclass(frozen=True)
class DevCandidates:
    """Validation's lists: per question, the passages to rerank and which of them are relevant."""

    questions: list[str]
    passages: list[list[str]]
    relevant: list[list[bool]]
    skipped: int  # dev questions without a negative to rank against


def dev_candidates(data: RerankData, max_candidates: int) -> DevCandidates:
    """Each dev question's positives and its allowed listed negatives (hard first, then others), at most
    `max_candidates` passages (positives first kept); questions without a negative are skipped."""
    questions, passages, relevant, skipped = [], [], [], 0
    for i in range(len(data)):
        pos = [int(j) for j in data.positives[i]]
        negs = [int(j) for j in list(data.hard[i]) + list(data.other[i]) if int(j) not in pos]
        negs = list(dict.fromkeys(negs))
        if not negs:
            skipped += 1
            continue
        pos = pos[: max(1, max_candidates - 1)]
        negs = negs[: max(1, max_candidates - len(pos))]
        questions.append(data.questions[i])
        passages.append([data.passages[j] for j in pos + negs])
        relevant.append([True] * len(pos) + [False] * len(negs))
    return DevCandidates(questions, passages, relevant, skipped)


def first_relevant_rank(scores: Sequence[float], relevant: Sequence[bool]) -> int:
    """1-based rank of the best-scored relevant passage, ties counted against it (a constant scorer ranks it last
    among its equals, never first by luck of order)."""
    best = max(s for s, r in zip(scores, relevant) if r)
    return 1 + sum(1 for s, r in zip(scores, relevant) if not r and s >= best)


def mrr_at_k(ranks: Sequence[int], k: int = 10) -> float:
    """Mean reciprocal rank with ranks beyond k scoring 0."""
    return float(np.mean([1.0 / r if r <= k else 0.0 for r in ranks])) if ranks else 0.0
