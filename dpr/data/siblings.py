"""The paragraph-sibling rule: in a collection whose ids follow `<paragraph>-<k>` (passages cut from one paragraph,
like the CMRC2018 mini corpus), passages sharing `<paragraph>` are siblings and never each other's hard negatives.

The rule holds only where the collection says so (dpr.data.collection_meta) or the user passes --sibling_ids: ids
such as `doc-0 … doc-9` are otherwise independent passages.
"""
from __future__ import annotations


def paragraph_of(pid: str) -> str | None:
    """The `<paragraph>` part of an id shaped `<paragraph>-<k>` (k digits), else None."""
    head, sep, tail = pid.rpartition("-")
    return head if sep and head and tail.isdigit() else None


def sibling_key(pid: str) -> str:
    """What siblings share: 'abc-3' -> 'abc'; an id without a '-<k>' suffix is its own paragraph ('abc' -> 'abc')."""
    return paragraph_of(pid) or pid
