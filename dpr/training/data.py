"""Training data: a compact in-memory store of a DPR JSON file, deterministic per-epoch sampling, and the batch
builder that tokenizes in DataLoader workers and pads every chunk only to its own longest member.

Memory: the file is parsed one item at a time; passages are de-duplicated (by passage_id, else by title + text) and
kept as one UTF-8 byte buffer plus offsets; each question keeps int32 indices into it. What stays resident is about
the UTF-8 size of the distinct passages plus the questions, not the size of the parsed JSON.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from dpr.data.formats import iter_dpr_json, passage_input
from dpr.data.shards import shard_range
from dpr.models.encoder import EncoderSettings
from dpr.models.tokens import pad_batch, padding_of, tokenize_ids
from dpr.utils.io import InputError


def passage_text(ctx: dict) -> str:
    """The text a DPR-JSON passage is encoded from (see dpr.data.formats.passage_input)."""
    return passage_input(ctx["text"], ctx.get("title"))


class PassageStore:
    """De-duplicated passages as one UTF-8 buffer with offsets, and each passage's identity group.

    Passages are stored once per passage_id (else per text). `group[k]` is shared by every stored passage with the
    same encoded text (title + text, see passage_text), so "same id or same text" is "same group": the identity
    that false-negative masking and average-rank de-duplication use.
    """

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self._text_group: dict[bytes, int] = {}
        self._groups: list[int] = []
        self._chunks: list[bytes] = []
        self._offsets = [0]
        self.blob = b""
        self.offsets = np.zeros(1, dtype=np.int64)
        self.group = np.zeros(0, dtype=np.int32)

    def add(self, ctx: dict) -> int:
        text = passage_text(ctx)
        key = f"id:{ctx['passage_id']}" if ctx.get("passage_id") not in (None, "") else "t:" + text
        idx = self._index.get(key)
        if idx is None:
            idx = self._index[key] = len(self._offsets) - 1
            data = text.encode("utf-8")
            self._chunks.append(data)
            self._offsets.append(self._offsets[-1] + len(data))
            digest = hashlib.blake2b(data, digest_size=16).digest()
            self._groups.append(self._text_group.setdefault(digest, len(self._text_group)))
        return idx

    def freeze(self) -> None:
        """Pack what was added into the buffer and drop the build-time indexes."""
        self.blob = b"".join(self._chunks)
        self.offsets = np.asarray(self._offsets, dtype=np.int64)
        self.group = np.asarray(self._groups, dtype=np.int32)
        self._chunks, self._index, self._offsets, self._text_group, self._groups = [], {}, [], {}, []

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
        for n, line, item in iter_dpr_json(path):
            if limit and len(self.questions) == limit:
                break
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

    def sample_indices(self, i: int, n_hard: int, n_other: int, rng: np.random.Generator | None,
                       shuffle_positive: bool = False, fill: bool = True) -> tuple[int, list[int]]:
        """(positive, [negatives...]) passage indices for question i; rng=None takes the first of each pool.

        The positive is the question's first unless `shuffle_positive` (then drawn from rng). Negatives: `n_hard`
        from the hard pool and `n_other` from the other pool, each topped up from the other pool when short, shuffled
        by rng; if both run dry and `fill`, random passages of the file fill the gap (so every question brings the
        same number of passages). The draws do not depend on `shuffle_positive`: the negatives are the same either way.
        """
        pos, hard, other = self.positives[i], self.hard[i], self.other[i]
        positive = int(pos[0])
        if rng is not None:
            pos_order = rng.permutation(len(pos))
            hard = hard[rng.permutation(len(hard))]
            other = other[rng.permutation(len(other))]
            if shuffle_positive:
                positive = int(pos[pos_order[0]])
        chosen = list(hard[:n_hard]) + list(other[:n_other])
        rest = list(hard[n_hard:]) + list(other[n_other:])
        need = n_hard + n_other - len(chosen)
        chosen += rest[:need]
        if fill and len(chosen) < n_hard + n_other:
            chosen += self._fillers(i, n_hard + n_other - len(chosen), set(chosen) | set(pos.tolist()))
        return positive, [int(j) for j in chosen]

    def sample(self, i: int, n_hard: int, n_other: int, rng: np.random.Generator | None, fill: bool = True,
               shuffle_positive: bool = False) -> tuple[str, list[str]]:
        """(question, [positive, negatives...]) texts for question i (see sample_indices)."""
        positive, negatives = self.sample_indices(i, n_hard, n_other, rng, shuffle_positive, fill)
        return self.questions[i], [self.passages[j] for j in [positive, *negatives]]

    def positive_groups(self, i: int) -> set[int]:
        """Identity groups (same id or same text) of all of question i's positives."""
        return {int(g) for g in self.passages.group[self.positives[i]]}

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


def average_rank_pool(data: BiEncoderData, n_questions: int, n_hard: int, n_other: int
                      ) -> tuple[list[str], list[str], list[int]]:
    """(questions, passage pool, index of each question's positive in the pool) for average-rank validation: the
    first `n_questions` questions with their first positive and first negatives, every passage in the pool once
    (de-duplicated by passage id, or encoded text)."""
    questions, pool, where, positive = [], [], {}, []
    for i in range(n_questions):
        pos, negs = data.sample_indices(i, n_hard, n_other, None, fill=False)
        questions.append(data.questions[i])
        for j in [pos, *negs]:
            g = int(data.passages.group[j])
            if g not in where:
                where[g] = len(pool)
                pool.append(data.passages[j])
        positive.append(where[int(data.passages.group[pos])])
    return questions, pool, positive


def epoch_batches(n_examples: int, global_batch: int, seed: int, epoch: int, shuffle: bool = True) -> list[np.ndarray]:
    """The epoch's global batches of question indices; order from (seed, epoch). The last batch may be smaller."""
    order = np.random.default_rng([seed, epoch]).permutation(n_examples) if shuffle else np.arange(n_examples)
    return [order[s : s + global_batch] for s in range(0, n_examples, global_batch)]


def split_for_rank(batch: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This rank's contiguous slice of a global batch (sizes differ by at most one)."""
    start, stop = shard_range(len(batch), rank, world_size)
    return batch[start:stop]


def pad_chunk(ids: list[list[int]], pad_id: int, left: bool = False) -> dict[str, torch.Tensor]:
    """Pad token id lists to the longest of them (dpr.models.tokens.pad_batch, the one padding rule)."""
    input_ids, mask = pad_batch(ids, pad_id, left)
    return {"input_ids": input_ids, "attention_mask": mask}


def chunked(ids: list[list[int]], chunk_size: int, pad_id: int, left: bool = False) -> list[dict[str, torch.Tensor]]:
    """Split into chunks of `chunk_size`, each padded only to its own longest member."""
    return [pad_chunk(ids[s : s + chunk_size], pad_id, left) for s in range(0, len(ids), chunk_size)]


def sorted_chunks(ids: list[list[int]], chunk_size: int, pad_id: int, left: bool = False
                  ) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor | None]:
    """Chunks of the texts sorted longest first (little padding in each), and the order (row k = text order[k]).

    With one chunk the order changes nothing, so it is left as is (order None)."""
    if len(ids) <= chunk_size:
        return chunked(ids, chunk_size, pad_id, left), None
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    return chunked([ids[i] for i in order], chunk_size, pad_id, left), torch.tensor(order, dtype=torch.long)


@dataclass(frozen=True)
class SamplingConfig:
    """Passages per question and how they are drawn: negatives vary by (seed, epoch, question) when
    `shuffle_negatives`; the positive is the first unless `shuffle_positive` (--shuffle_positive_ctx)."""

    hard_negatives: int
    other_negatives: int
    shuffle_negatives: bool
    seed: int
    shuffle_positive: bool = False

    @property
    def passages_per_question(self) -> int:
        return 1 + self.hard_negatives + self.other_negatives

    def rng(self, epoch: int, question: int) -> np.random.Generator | None:
        return np.random.default_rng([self.seed, epoch, int(question)]) if self.shuffle_negatives else None


def false_negative_pairs(data: BiEncoderData, questions: Sequence[int], passages: Sequence[int], ppq: int
                         ) -> torch.Tensor:
    """[K, 2] (row, column) score entries to mask: column j holds one of question row's positives (same passage id
    or same encoded text), and j is not row's own positive column (row * ppq). Rows/columns are global batch order."""
    groups = data.passages.group[np.asarray(passages, dtype=np.int64)]
    pairs = []
    for row, q in enumerate(questions):
        hits = np.flatnonzero(np.isin(groups, list(data.positive_groups(int(q)))))
        pairs.extend((row, int(j)) for j in hits if j != row * ppq)
    return torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)


def pack_chunks(chunks: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Chunks as two tensors (all token ids + masks flat, and each chunk's shape), whatever their number: a
    DataLoader worker passes every tensor through its own file descriptor."""
    flat = torch.cat([torch.stack([c["input_ids"].reshape(-1), c["attention_mask"].reshape(-1)]) for c in chunks], 1)
    shapes = torch.tensor([list(c["input_ids"].shape) for c in chunks], dtype=torch.long)
    return {"flat": flat, "shapes": shapes}


def unpack_chunks(packed: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """The chunks of `pack_chunks` (views, no copy)."""
    out, start = [], 0
    flat = packed["flat"]
    for rows, width in packed["shapes"].tolist():
        n = rows * width
        out.append({"input_ids": flat[0, start : start + n].view(rows, width),
                    "attention_mask": flat[1, start : start + n].view(rows, width)})
        start += n
    return out


class BatchBuilder:
    """Turns question indices into tokenized, chunk-padded, packed tensors (runs in DataLoader workers)."""

    def __init__(self, data: BiEncoderData, tokenizer: PreTrainedTokenizerBase, settings: EncoderSettings,
                 sampling: SamplingConfig, q_len: int, p_len: int, q_chunk: int, p_chunk: int):
        self.data, self.tokenizer, self.settings, self.sampling = data, tokenizer, settings, sampling
        self.q_len, self.p_len, self.q_chunk, self.p_chunk = q_len, p_len, q_chunk, p_chunk

    def sample(self, indices: Sequence[int], epoch: int) -> list[int]:
        """Passage indices of the questions in order, passages_per_question each (positive first)."""
        s, out = self.sampling, []
        for i in indices:
            positive, negatives = self.data.sample_indices(int(i), s.hard_negatives, s.other_negatives,
                                                           s.rng(epoch, int(i)), s.shuffle_positive)
            out += [positive, *negatives]
        return out

    def __call__(self, indices: np.ndarray, epoch: int, global_indices: np.ndarray | None = None,
                 offset: int = 0) -> dict:
        """This rank's questions `indices` (at position `offset` of the global batch `global_indices`; default: the
        local batch is the global one). The false-negative mask covers the whole global batch, so every rank
        computes the same one."""
        global_indices = indices if global_indices is None else global_indices
        global_passages = self.sample(global_indices, epoch)
        ppq = self.sampling.passages_per_question
        local = global_passages[offset * ppq : (offset + len(indices)) * ppq]
        questions = [self.data.questions[int(i)] for i in indices]
        passages = [self.data.passages[j] for j in local]
        pad, left = padding_of(self.tokenizer)
        q_ids = tokenize_ids(self.tokenizer, self.settings.prepare(questions, "query"), self.q_len)
        p_ids = tokenize_ids(self.tokenizer, self.settings.prepare(passages, "passage"), self.p_len)
        q_chunks, q_order = sorted_chunks(q_ids, self.q_chunk, pad, left)
        p_chunks, p_order = sorted_chunks(p_ids, self.p_chunk, pad, left)
        return {"q": pack_chunks(q_chunks), "p": pack_chunks(p_chunks), "q_order": q_order, "p_order": p_order,
                "masked": false_negative_pairs(self.data, global_indices, global_passages, ppq),
                "n_questions": len(questions)}


class EpochBatches(torch.utils.data.Dataset):
    """Item k = this rank's part of global batch `start + k` of the epoch, built by a BatchBuilder."""

    def __init__(self, builder: BatchBuilder, batches: list[np.ndarray], epoch: int, start: int, rank: int, world_size: int):
        self.builder, self.batches, self.epoch, self.start = builder, batches, epoch, start
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return len(self.batches) - self.start

    def __getitem__(self, k: int) -> dict:
        batch = self.batches[self.start + k]
        parts = [split_for_rank(batch, r, self.world_size) for r in range(self.world_size)]
        offset = sum(len(x) for x in parts[: self.rank])
        out = self.builder(parts[self.rank], self.epoch, batch, offset)
        out["global_sizes"] = [len(x) for x in parts]
        return out
