"""`collection_meta.json`: the record a collection's maker writes beside it, saying how its passage ids are shaped.

{"id_scheme": "paragraph-k", "made_by": ..., ...}: "paragraph-k" turns on the sibling rule (dpr.data.siblings) for
every step that reads the passages in that directory; "opaque" (or no record) leaves every id on its own.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dpr.utils.io import InputError, read_json, write_json

META_NAME = "collection_meta.json"
PARAGRAPH_K = "paragraph-k"
ID_SCHEMES = (PARAGRAPH_K, "opaque")


def meta_path(beside: str | os.PathLike) -> Path:
    """The record for a directory, or for a file (passages.tsv, a shard): collection_meta.json in its directory."""
    path = Path(beside)
    return (path if path.is_dir() else path.parent) / META_NAME


def read_meta(beside: str | os.PathLike) -> dict[str, Any] | None:
    """The record beside `beside` (None when there is none); a malformed one names the file."""
    path = meta_path(beside)
    if not path.is_file():
        return None
    meta = read_json(path)
    if not isinstance(meta, dict) or meta.get("id_scheme") not in ID_SCHEMES:
        raise InputError(path, f"expected a JSON object whose \"id_scheme\" is one of {', '.join(ID_SCHEMES)}")
    return meta


def write_meta(directory: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write (atomically) the record of the collection in `directory`."""
    if meta.get("id_scheme") not in ID_SCHEMES:
        raise ValueError(f"id_scheme must be one of {ID_SCHEMES}, got {meta.get('id_scheme')!r}")
    path = Path(directory) / META_NAME
    write_json(path, meta)
    return path


def sibling_ids_enabled(flag: bool, beside: str | os.PathLike) -> tuple[bool, str]:
    """Whether the sibling rule applies (the --sibling_ids flag, else the record beside `beside`), and why."""
    if flag:
        return True, "--sibling_ids"
    meta = read_meta(beside)
    if meta is None:
        return False, f"no {META_NAME} beside {beside} and no --sibling_ids"
    return meta["id_scheme"] == PARAGRAPH_K, f"{meta_path(beside)} says id_scheme {meta['id_scheme']}"
