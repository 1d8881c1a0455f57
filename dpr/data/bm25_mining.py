"""Step 1's BM25 hard negatives (dense mining is dpr/retrieval/mining.py; this one sits in dpr/data, below it,
because step 1 uses it): each question's top passages that its exclusion rule (dpr/data/exclusion.py) rejects
neither by id nor, once the texts are read, by text; a question whose list lost passages is searched again, deeper."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Protocol

from dpr.data.bm25 import default_cache_dir, index_passages
from dpr.data.exclusion import Exclusion


class MinedQuestion(Protocol):
    """What the miner reads of a question (dpr/data/preprocess.py's Question) and writes back (`mined`)."""

    question: str
    mined: list[int]

    def exclusion(self, sibling_ids: bool) -> Exclusion: ...


class MinedCollection(Protocol):
    """What the miner reads of the collection (dpr/data/preprocess.py's Collection)."""

    pids: list[str]
    family_size: Counter


class Bm25Miner:
    """BM25 hard negatives: each question's top-k passages (doc indices in q.mined) that its Exclusion rejects neither
    by id (checked while ranking) nor by text (checked once the texts are read, see check_texts)."""

    def __init__(self, passages_tsv: Path, coll: MinedCollection, k: int, num_workers: int, sibling_ids: bool,
                 stats: Counter, batch: int = 256):
        self.index, _ = index_passages(passages_tsv, default_cache_dir(passages_tsv), num_workers)
        self.coll, self.k, self.num_workers, self.sibling_ids = coll, k, num_workers, sibling_ids
        self.stats, self.batch = stats, batch
        self.depth: dict[int, int] = {}  # id(question) -> last search depth
        self.rejected: dict[int, set[int]] = {}  # id(question) -> docs whose text equals a positive's

    def _first_depth(self, excl: Exclusion) -> int:
        if not self.sibling_ids:
            return self.k + len(excl.ids)
        return self.k + len(excl.ids) + sum(self.coll.family_size[f] for f in excl.paragraphs)

    def search(self, questions: list[MinedQuestion]) -> None:
        """Rank (again, deeper for a question searched before) and keep the first k that pass the id check."""
        n_docs = len(self.coll.pids)
        for start in range(0, len(questions), self.batch):
            chunk = questions[start:start + self.batch]
            excls = [q.exclusion(self.sibling_ids) for q in chunk]
            for q, e in zip(chunk, excls):
                last = self.depth.get(id(q))
                self.depth[id(q)] = min(n_docs, self._first_depth(e) if last is None else 2 * last)
            hits_all = self.index.search([q.question for q in chunk], max(self.depth[id(q)] for q in chunk),
                                         self.num_workers)
            for q, excl, hits in zip(chunk, excls, hits_all):
                rejected = self.rejected.get(id(q), set())
                q.mined = []
                for doc, _score in hits[:self.depth[id(q)]]:
                    if doc in rejected or excl.rejects_id(self.coll.pids[doc]):
                        continue
                    q.mined.append(doc)
                    if len(q.mined) == self.k:
                        break

    def check_texts(self, questions: list[MinedQuestion], by_doc: dict[int, str]) -> list[MinedQuestion]:
        """Drop from q.mined the passages whose text equals a positive's; the questions to search again, deeper."""
        again = []
        for q in questions:
            excl = q.exclusion(self.sibling_ids)
            bad = [d for d in q.mined if excl.rejects(self.coll.pids[d], by_doc[d])]
            if not bad:
                continue
            self.stats["negatives_dropped_identical_text"] += len(bad)
            self.rejected.setdefault(id(q), set()).update(bad)
            q.mined = [d for d in q.mined if d not in self.rejected[id(q)]]
            if self.depth[id(q)] < len(self.coll.pids):
                again.append(q)
        return again
