"""Build a SentencePiece "precompiled charsmap" from a character map, for `tokenizers.normalizers.Precompiled`.

The blob is what SentencePiece stores in `normalizer_spec.precompiled_charsmap`: a little-endian uint32 byte
length of a Darts-clone double-array trie, the trie's uint32 units, then the NUL-terminated replacement strings.
A trie key is the UTF-8 of one source string; its leaf value is the byte offset of the replacement.
Lookups run in Rust, so applying thousands of rules costs about as much as applying none.
"""
from __future__ import annotations

import bisect
import itertools
import struct
from collections.abc import Mapping

_HAS_LEAF = 1 << 8
_IS_VALUE = 1 << 31
_MAX_DIRECT_OFFSET = 1 << 21


def _offset_bits(offset: int) -> int:
    """Darts-clone offset field: small offsets stored directly (bits 10-30)."""
    if offset >= _MAX_DIRECT_OFFSET:
        raise ValueError("charsmap trie too large for this simple builder")
    return offset << 10


def _find_base(labels: list[int], free: list[int], size: int, used_bases: set[int]) -> int:
    """Lowest unused base whose child slots base ^ label are all free (slots at or past `size` are free)."""
    free_set = set(free)
    for first in itertools.chain(free, itertools.count(size)):
        base = first ^ labels[0]
        if base > 0 and base not in used_bases and all(
            (base ^ lab) >= size or (base ^ lab) in free_set for lab in labels[1:]
        ):
            return base
    raise AssertionError("unreachable")


def _build_trie(keys: dict[bytes, int]) -> list[int]:
    """Double array for `keys` (byte string -> value < 2**31); a key must not be empty or contain NUL."""
    root: dict = {}
    for key, value in keys.items():
        if not key or 0 in key:
            raise ValueError(f"charsmap key {key!r} is empty or holds a NUL byte")
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[None] = value  # None marks "a key ends here"
    units = [0]
    free: list[int] = []  # unused positions below len(units), ascending
    used_bases: set[int] = set()
    queue = [(root, 0)]
    while queue:
        node, pos = queue.pop()
        labels = sorted(0 if k is None else k for k in node)
        base = _find_base(labels, free, len(units), used_bases)
        need = max(base ^ lab for lab in labels) + 1
        if need > len(units):
            free.extend(range(len(units), need))
            units.extend([0] * (need - len(units)))
        used_bases.add(base)
        units[pos] |= _offset_bits(pos ^ base)
        for label in labels:
            child = base ^ label
            del free[bisect.bisect_left(free, child)]
            if label == 0:
                units[pos] |= _HAS_LEAF
                units[child] = _IS_VALUE | node[None]
            else:
                units[child] = label
                queue.append((node[label], child))
    # a lookup may probe any slot base ^ byte of a base's 256-slot block: allocate whole blocks
    units.extend([0] * (-len(units) % 256))
    return units


def build_precompiled_charsmap(mapping: Mapping[str, str]) -> bytes:
    """Serialized charsmap replacing each key of `mapping` (one or more characters) by its value."""
    strings = bytearray()
    keys: dict[bytes, int] = {}
    for source, target in sorted(mapping.items()):
        if "\0" in target:
            raise ValueError(f"charsmap replacement for {source!r} holds a NUL character")
        keys[source.encode("utf-8")] = len(strings)
        strings += target.encode("utf-8") + b"\0"
    units = _build_trie(keys)
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(strings)
