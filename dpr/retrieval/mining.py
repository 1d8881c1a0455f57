"""Hard-negative mining: a training question's retrieved passages after the first `skip_top` ranks (where unlabelled
positives hide) that dpr.data.exclusion lets through: never a positive by id or by encoded text (title + text), nor,
under the sibling rule (`--sibling_ids` or the collection's collection_meta.json), a passage cut from the same
paragraph as a positive."""
from __future__ import annotations

from dpr.data.exclusion import exclusion_of_ctxs


def mine_negatives(entry: dict, ranked_pids: list[str], passages: dict[str, tuple[str, str]], skip_top: int,
                   max_negatives: int | None, *, sibling_ids: bool) -> list[dict]:
    """hard_negative_ctxs for one DPR training entry from its ranked retrieval (best first)."""
    excl = exclusion_of_ctxs(entry.get("positive_ctxs") or [], sibling_ids)
    negatives = []
    for pid in ranked_pids[skip_top:]:
        if max_negatives is not None and len(negatives) >= max_negatives:
            break
        text, title = passages[pid]
        if excl.rejects(pid, text, title):
            continue
        negatives.append({"title": title, "text": text, "passage_id": pid})
    return negatives


def with_mined_negatives(entries: list[dict], rankings: list[list[str]], passages: dict[str, tuple[str, str]],
                         skip_top: int, max_negatives: int | None, *, sibling_ids: bool) -> tuple[list[dict], int]:
    """New training entries whose hard_negative_ctxs are the mined ones; also how many got none."""
    out, empty = [], 0
    for entry, ranked in zip(entries, rankings, strict=True):
        mined = mine_negatives(entry, ranked, passages, skip_top, max_negatives, sibling_ids=sibling_ids)
        empty += not mined
        out.append({**entry, "hard_negative_ctxs": mined})
    return out, empty
