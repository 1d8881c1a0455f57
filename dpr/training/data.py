"""Training data: a compact in-memory store of a DPR JSON file, deterministic per-epoch sampling, and the batch
builder that tokenizes in DataLoader workers and pads every chunk only to its own longest member.

Memory: the file is parsed one item at a time; passages are de-duplicated (by passage_id, else by title + text) and
kept as one UTF-8 byte buffer plus offsets; each question keeps int32 indices into it. What stays resident is about
the UTF-8 size of the distinct passages plus the questions, not the size of the parsed JSON.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from dpr.data.formats import passage_input
from dpr.models.encoder import EncoderSettings
from dpr.utils.io import InputError


def iter_json_array(path: str | os.PathLike, read_size: int = 1 << 22) -> Iterator[tuple[int, int, object]]:
    """Yield (item number, line, item) from a file holding one JSON array, without loading it whole."""
    decoder = json.JSONDecoder()
    try:
        f = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    with f:
        buf, pos, line, eof = "", 0, 1, False

        def more(size: int) -> bool:
            nonlocal buf, pos, eof
            if eof:
                return False
            try:
                data = f.read(size)
            except UnicodeDecodeError as e:
                raise InputError(path, f"not valid UTF-8 ({e.reason})") from None
            if not data:
                eof = True
                return False
            buf, pos = buf[pos:] + data, 0
            return True

        def skip_ws() -> str:
            nonlocal pos, line
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    line += buf[pos] == "\n"
                    pos += 1
                if pos < len(buf) or not more(read_size):
                    return buf[pos] if pos < len(buf) else ""

        if skip_ws() != "[":
            raise InputError(path, "expected a JSON list of questions (DPR format)", line=line)
        pos += 1
        n = 0
        if skip_ws() == "]":
            return
        while True:
            size = read_size
            while True:
                try:
                    obj, end = decoder.raw_decode(buf, pos)
                    break
                except json.JSONDecodeError as e:
                    if not more(size):
                        raise InputError(path, f"malformed JSON: {e.msg}", line=line + buf.count("\n", pos, e.pos)) from None
                    size *= 2
            yield n, line, obj
            n += 1
            line += buf.count("\n", pos, end)
            pos = end
            c = skip_ws()
            pos += 1
            if c == "]":
                return
            if c != ",":
                raise InputError(path, "expected ',' or ']' between list items", line=line)
            skip_ws()


def passage_text(ctx: dict) -> str:
    """The text a DPR-JSON passage is encoded from (see dpr.data.formats.passage_input)."""
    return passage_input(ctx["text"], ctx.get("title"))


class PassageStore:
    """De-duplicated passages as one UTF-8 buffer with offsets."""

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self._chunks: list[bytes] = []
        self._offsets = [0]
        self.blob = b""
        self.offsets = np.zeros(1, dtype=np.int64)

    def add(self, ctx: dict) -> int:
        text = passage_text(ctx)
        key = f"id:{ctx['passage_id']}" if ctx.get("passage_id") not in (None, "") else "t:" + text
        idx = self._index.get(key)
        if idx is None:
            idx = self._index[key] = len(self._offsets) - 1
            data = text.encode("utf-8")
            self._chunks.append(data)
            self._offsets.append(self._offsets[-1] + len(data))
        return idx

    def freeze(self) -> None:
        """Pack what was added into the buffer and drop the build-time index."""
        self.blob = b"".join(self._chunks)
        self.offsets = np.asarray(self._offsets, dtype=np.int64)
        self._chunks, self._index, self._offsets = [], {}, []

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.blob[self.offsets[i] : self.offsets[i + 1]].decode("utf-8")


class _Ragged:
    """Variable-length int32 lists stored flat (one per question)."""

    def __init__(self) -> None:
        self._flat: list[int] = []
        self._off = [0]

    def append(self, values: Sequence[int]) -> None:
        self._flat.extend(values)
        self._off.append(len(self._flat))

    def freeze(self) -> None:
        self.flat = np.asarray(self._flat, dtype=np.int32)
        self.off = np.asarray(self._off, dtype=np.int64)
        del self._flat, self._off

    def __getitem__(self, i: int) -> np.ndarray:
        return self.flat[self.off[i] : self.off[i + 1]]


def _contexts(path: str | os.PathLike, item: dict, key: str, line: int) -> list[dict]:
    ctxs = item.get(key, [])
    if not isinstance(ctxs, list) or not all(isinstance(c, dict) and isinstance(c.get("text"), str) for c in ctxs):
        raise InputError(path, f"'{key}' must be a list of objects with a 'text' string", line=line)
    return ctxs


class BiEncoderData:
    """Questions with indices of their positive, hard negative and other negative passages."""

    def __init__(self, path: str | os.PathLike, limit: int = 0):
        """Read `path`; with limit > 0 keep only the first `limit` questions that have a positive."""
        self.path = str(path)
        self.questions: list[str] = []
        self.passages = PassageStore()
        self.positives, self.hard, self.other = _Ragged(), _Ragged(), _Ragged()
        skipped = 0
        for n, line, item in iter_json_array(path):
            if limit and len(self.questions) == limit:
                break
            if not isinstance(item, dict) or not isinstance(item.get("question"), str):
                raise InputError(path, f"item {n}: expected an object with a 'question' string", line=line)
            pos = _contexts(path, item, "positive_ctxs", line)
            if not pos:
                skipped += 1
                continue
            self.questions.append(item["question"])
            self.positives.append([self.passages.add(c) for c in pos])
            self.hard.append([self.passages.add(c) for c in _contexts(path, item, "hard_negative_ctxs", line)])
            self.other.append([self.passages.add(c) for c in _contexts(path, item, "negative_ctxs", line)])
        self.skipped_no_positive = skipped
        for part in (self.passages, self.positives, self.hard, self.other):
            part.freeze()
        if not self.questions:
            raise InputError(path, "no question with a positive passage")

    def __len__(self) -> int:
        return len(self.questions)

    def sample(self, i: int, n_hard: int, n_other: int, rng: np.random.Generator | None, fill: bool = True
               ) -> tuple[str, list[str]]:
        """(question, [positive, negatives...]) for question i; rng=None takes the first of each pool (validation).

        Negatives: `n_hard` from the hard pool and `n_other` from the other pool, each topped up from the other pool
        when short; if both run dry and `fill`, random passages of the file fill the gap (so every question brings
        the same number of passages).
        """
        pos, hard, other = self.positives[i], self.hard[i], self.other[i]
        if rng is not None:
            pos = pos[rng.permutation(len(pos))]
            hard = hard[rng.permutation(len(hard))]
            other = other[rng.permutation(len(other))]
        chosen = list(hard[:n_hard]) + list(other[:n_other])
        rest = list(hard[n_hard:]) + list(other[n_other:])
        need = n_hard + n_other - len(chosen)
        chosen += rest[:need]
        if fill and len(chosen) < n_hard + n_other:
            chosen += self._fillers(i, n_hard + n_other - len(chosen), set(chosen) | set(pos.tolist()))
        return self.questions[i], [self.passages[int(pos[0])]] + [self.passages[int(j)] for j in chosen]

    def _fillers(self, i: int, count: int, exclude: set[int]) -> list[int]:
        """`count` random passages of the file other than `exclude` (deterministic in i), for dry pools."""
        n = len(self.passages)
        if n - len(exclude) < count:
            raise ValueError(f"{self.path}: only {n} distinct passages; question {i} cannot get {count} more negatives")
        rng = np.random.default_rng([i, 7919])
        out: list[int] = []
        while len(out) < count:
            j = int(rng.integers(n))
            if j not in exclude:
                out.append(j)
                exclude.add(j)
        return out


def epoch_batches(n_examples: int, global_batch: int, seed: int, epoch: int, shuffle: bool = True) -> list[np.ndarray]:
    """The epoch's global batches of question indices; order from (seed, epoch). The last batch may be smaller."""
    order = np.random.default_rng([seed, epoch]).permutation(n_examples) if shuffle else np.arange(n_examples)
    return [order[s : s + global_batch] for s in range(0, n_examples, global_batch)]


def split_for_rank(batch: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This rank's contiguous slice of a global batch (sizes differ by at most one)."""
    return np.array_split(batch, world_size)[rank]


def pad_chunk(ids: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad token id lists to the longest of them."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for r, x in enumerate(ids):
        input_ids[r, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[r, : len(x)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def chunked(ids: list[list[int]], chunk_size: int, pad_id: int) -> list[dict[str, torch.Tensor]]:
    """Split into chunks of `chunk_size`, each padded only to its own longest member."""
    return [pad_chunk(ids[s : s + chunk_size], pad_id) for s in range(0, len(ids), chunk_size)]


def sorted_chunks(ids: list[list[int]], chunk_size: int, pad_id: int) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor | None]:
    """Chunks of the texts sorted longest first (little padding in each), and the order (row k = text order[k]).

    With one chunk the order changes nothing, so it is left as is (order None)."""
    if len(ids) <= chunk_size:
        return chunked(ids, chunk_size, pad_id), None
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    return chunked([ids[i] for i in order], chunk_size, pad_id), torch.tensor(order, dtype=torch.long)


@dataclass
class SamplingConfig:
    hard_negatives: int
    other_negatives: int
    shuffle: bool
    seed: int

    @property
    def passages_per_question(self) -> int:
        return 1 + self.hard_negatives + self.other_negatives


class BatchBuilder:
    """Turns question indices into tokenized, chunk-padded tensors (runs in DataLoader workers)."""

    def __init__(self, data: BiEncoderData, tokenizer: PreTrainedTokenizerBase, settings: EncoderSettings,
                 sampling: SamplingConfig, q_len: int, p_len: int, q_chunk: int, p_chunk: int):
        self.data, self.tokenizer, self.settings, self.sampling = data, tokenizer, settings, sampling
        self.q_len, self.p_len, self.q_chunk, self.p_chunk = q_len, p_len, q_chunk, p_chunk

    def __call__(self, indices: np.ndarray, epoch: int) -> dict:
        s = self.sampling
        questions, passages = [], []
        for i in indices:
            rng = np.random.default_rng([s.seed, epoch, int(i)]) if s.shuffle else None
            q, ps = self.data.sample(int(i), s.hard_negatives, s.other_negatives, rng)
            questions.append(q)
            passages.extend(ps)
        pad = self.tokenizer.pad_token_id or 0
        q_ids = self.tokenizer(self.settings.prepare(questions, "query"), max_length=self.q_len, truncation=True)["input_ids"]
        p_ids = self.tokenizer(self.settings.prepare(passages, "passage"), max_length=self.p_len, truncation=True)["input_ids"]
        q_chunks, q_order = sorted_chunks(q_ids, self.q_chunk, pad)
        p_chunks, p_order = sorted_chunks(p_ids, self.p_chunk, pad)
        return {"q_chunks": q_chunks, "p_chunks": p_chunks, "q_order": q_order, "p_order": p_order,
                "n_questions": len(questions)}


class EpochBatches(torch.utils.data.Dataset):
    """Item k = this rank's part of global batch `start + k` of the epoch, built by a BatchBuilder."""

    def __init__(self, builder: BatchBuilder, batches: list[np.ndarray], epoch: int, start: int, rank: int, world_size: int):
        self.builder, self.batches, self.epoch, self.start = builder, batches, epoch, start
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return len(self.batches) - self.start

    def __getitem__(self, k: int) -> dict:
        local = split_for_rank(self.batches[self.start + k], self.rank, self.world_size)
        out = self.builder(local, self.epoch)
        out["global_sizes"] = [len(x) for x in np.array_split(self.batches[self.start + k], self.world_size)]
        return out
