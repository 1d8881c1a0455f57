"""Load the question and/or passage tower from whatever a user passes as --model_file / --pretrained_model_cfg.

`load_towers` is the one loader of every script: it takes a frozen `TowerOptions` (built by the script from its
flags), loads only the tower(s) asked for, always in fp32 (autocast supplies lower precision; a checkpoint saved in
fp16/bf16 would otherwise train in that dtype and break GradScaler), and applies the option overrides once.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from transformers import PreTrainedTokenizerBase

from dpr.models.encoder import Encoder, EncoderSettings, load_tokenizer
from dpr.utils.io import InputError

Q_SUFFIX, P_SUFFIX = ".question_encoder", ".passage_encoder"
Need = Literal["question", "passage", "both"]
LOAD_DTYPE = torch.float32


@dataclass(frozen=True)
class TowerOptions:
    """Where the towers come from and what to change on top of their stored settings."""

    source: str  # a dpr_biencoder.E.I file, a dir with question_encoder/ + passage_encoder/, one HF dir, or a name
    pooling: str | None = None  # override the stored pooling ("cls" / "mean")
    lowercase: bool = False  # lowercase texts before tokenization (on top of the stored setting)
    normalize: bool | None = None  # override L2 normalisation (training's --similarity)
    shared: bool = False  # one module for both towers (training's --shared_encoder)
    query_prefix: str | None = None  # override the stored query prefix ('' for none)
    passage_prefix: str | None = None  # override the stored passage prefix ('' for none)


@dataclass
class Towers:
    question: Encoder | None
    passage: Encoder | None
    tokenizer: PreTrainedTokenizerBase


def encoder_dirs(path: str | os.PathLike) -> tuple[str, str] | None:
    """(question dir, passage dir) for a training checkpoint file or a dir holding both towers; None otherwise."""
    base = Path(path)
    for q, c in ((Path(str(base) + Q_SUFFIX), Path(str(base) + P_SUFFIX)),
                 (base / "question_encoder", base / "passage_encoder")):
        if q.is_dir() and c.is_dir():
            return str(q), str(c)
    return None


def _load(path: str, settings: EncoderSettings | None) -> Encoder:
    return Encoder.from_pretrained(path, settings, dtype=LOAD_DTYPE)


def _resolve_single(path: str | os.PathLike) -> str:
    """The HF directory of a single-encoder source (local dir or registry name), with clear errors."""
    if Path(path).is_file():
        raise InputError(path, f"a training checkpoint, but its encoder directories ({Path(path).name}{Q_SUFFIX}/, "
                               f"{Path(path).name}{P_SUFFIX}/) are missing beside it")
    from dpr.models.pretrained import resolve_model_path

    return resolve_model_path(str(path))


def _load_single(path: str | os.PathLike, resolved: str, settings: EncoderSettings | None) -> Encoder:
    from dpr.models.pretrained import missing_model_message

    try:
        return _load(resolved, settings)
    except OSError as e:
        if Path(resolved).is_dir():
            raise
        raise InputError(path, missing_model_message(str(path))) from e


def load_towers(options: TowerOptions, need: Need = "both") -> Towers:
    """The tower(s) `need` asks for (the other is None), in fp32, with the options applied.

    A pair source (checkpoint or question_encoder/ + passage_encoder/ dir) gives its two towers (with `shared`, the
    question tower serves both). A single encoder (HF dir or registry name) serves both: as one module with `shared`
    or when only one tower is needed, else as two independent copies (training both towers from one start).
    """
    if need not in ("question", "passage", "both"):
        raise ValueError(f"need must be 'question', 'passage' or 'both', not {need!r}")
    pair = encoder_dirs(options.source)
    if pair is not None:
        q_dir, p_dir = pair
        if options.shared and need == "both":
            need_q, need_p = True, False
        else:
            need_q, need_p = need in ("question", "both"), need in ("passage", "both")
        q = _load(q_dir, None) if need_q else None
        p = _load(p_dir, None) if need_p else None
        if options.shared and need == "both":
            p = q
        tokenizer = load_tokenizer(q_dir)
    else:
        resolved = _resolve_single(options.source)
        encoder = _load_single(options.source, resolved, None)
        tokenizer = load_tokenizer(resolved)
        q = encoder if need in ("question", "both") else None
        p = encoder if need in ("passage", "both") else None
        if need == "both" and not options.shared:
            p = copy.deepcopy(encoder)
    for enc in {id(e): e for e in (q, p) if e is not None}.values():
        apply_options(enc, options)
    return Towers(q, p, tokenizer)


def apply_options(encoder: Encoder, options: TowerOptions) -> None:
    """The options' overrides of the tower's stored settings."""
    apply_settings_options(encoder.settings, options)


def apply_settings_options(s: EncoderSettings, options: TowerOptions) -> None:
    """Overrides of stored settings: pooling, lowercasing, normalisation, prefixes (the one place they apply)."""
    if options.pooling:
        s.pooling = options.pooling
    if options.lowercase:
        s.lowercase = True
    if options.normalize is not None:
        s.normalize = options.normalize
    if options.query_prefix is not None:
        s.query_prefix = options.query_prefix
    if options.passage_prefix is not None:
        s.passage_prefix = options.passage_prefix


def load_encoder_pair(
    path: str | os.PathLike, settings: EncoderSettings | None = None
) -> tuple[Encoder, Encoder, PreTrainedTokenizerBase]:
    """Both towers of `path` for inspection (a single encoder serves both as the same module object).

    `settings` replaces the stored settings of every tower. Scripts use `load_towers`.
    """
    pair = encoder_dirs(path)
    if pair is not None:
        q_dir, p_dir = pair
        return _load(q_dir, settings), _load(p_dir, settings), load_tokenizer(q_dir)
    resolved = _resolve_single(path)
    encoder = _load_single(path, resolved, settings)
    return encoder, encoder, load_tokenizer(resolved)
