"""Which passages may never be a question's hard negative: the one rule that preprocessing (BM25, the baseline file's
own negatives, --dev_topk) and dense_retriever.py --mine_hard_negatives all apply."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dpr.data.formats import passage_input
from dpr.data.siblings import sibling_key


@dataclass(frozen=True)
class Exclusion:
    """A question's positives as ids, sibling keys (only under the sibling rule) and encoded texts."""

    ids: frozenset[str]
    paragraphs: frozenset[str]
    texts: frozenset[str]
    sibling_ids: bool

    def rejects_id(self, pid: str | None) -> bool:
        """A positive's id, or (under the sibling rule) a passage cut from the same paragraph as a positive."""
        if pid is None or pid == "":
            return False
        return pid in self.ids or (self.sibling_ids and sibling_key(pid) in self.paragraphs)

    def rejects(self, pid: str | None, text: str, title: str | None = "") -> bool:
        """rejects_id, or a passage the passage tower would see exactly as one of the positives (title + text)."""
        return self.rejects_id(pid) or passage_input(text, title) in self.texts


def exclusion(positives: Iterable[tuple[str | None, str | None, str | None]], sibling_ids: bool) -> Exclusion:
    """The Exclusion of positives given as (id | None, text | None, title); unknown ids or texts are left out."""
    ids, texts = set(), set()
    for pid, text, title in positives:
        if pid is not None and pid != "":
            ids.add(str(pid))
        if text is not None:
            texts.add(passage_input(text, title))
    paragraphs = frozenset(map(sibling_key, ids)) if sibling_ids else frozenset()
    return Exclusion(frozenset(ids), paragraphs, frozenset(texts), sibling_ids)


def exclusion_of_ctxs(positive_ctxs: Iterable[dict[str, Any]], sibling_ids: bool) -> Exclusion:
    """The Exclusion of a DPR entry's positive_ctxs ({"passage_id", "text", "title"})."""
    return exclusion(((None if c.get("passage_id") is None else str(c["passage_id"]), c.get("text"), c.get("title"))
                      for c in positive_ctxs), sibling_ids)
