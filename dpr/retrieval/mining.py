"""Hard-negative mining: a training question's retrieved passages that are not positives, after the first
`skip_top` ranks (where unlabelled positives hide). A passage from the same paragraph as a positive (ids
`<paragraph>-<k>` share the prefix before the last '-<digits>', dpr.data.formats.pid_family) is never a negative
either."""
from __future__ import annotations

from dpr.data.formats import pid_family


def paragraph_key(pid: str) -> str:
    """The paragraph a passage id belongs to: 'abc-3' -> 'abc'; ids without a '-<k>' suffix are their own."""
    return pid_family(pid) or pid


def mine_negatives(entry: dict, ranked_pids: list[str], passages: dict[str, tuple[str, str]], skip_top: int,
                   max_negatives: int | None) -> list[dict]:
    """hard_negative_ctxs for one DPR training entry from its ranked retrieval (best first).

    Excluded: the first `skip_top` ranks, positives (by id or by identical text) and their paragraph siblings.
    """
    positives = entry.get("positive_ctxs") or []
    pos_keys = {paragraph_key(str(c["passage_id"])) for c in positives if c.get("passage_id") not in (None, "")}
    pos_texts = {c.get("text") for c in positives}
    negatives = []
    for pid in ranked_pids[skip_top:]:
        if max_negatives is not None and len(negatives) >= max_negatives:
            break
        text, title = passages[pid]
        if paragraph_key(pid) in pos_keys or text in pos_texts:
            continue
        negatives.append({"title": title, "text": text, "passage_id": pid})
    return negatives


def with_mined_negatives(entries: list[dict], rankings: list[list[str]], passages: dict[str, tuple[str, str]],
                         skip_top: int, max_negatives: int | None) -> tuple[list[dict], int]:
    """New training entries whose hard_negative_ctxs are the mined ones; also how many got none."""
    out, empty = [], 0
    for entry, ranked in zip(entries, rankings, strict=True):
        mined = mine_negatives(entry, ranked, passages, skip_top, max_negatives)
        empty += not mined
        out.append({**entry, "hard_negative_ctxs": mined})
    return out, empty
