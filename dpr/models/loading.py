"""Load the question and/or passage tower from whatever a user passes as --model_file / --pretrained_model_cfg.

`load_towers` is the one loader of every script: it takes a frozen `TowerOptions` (built by the script from its
flags), finds the towers with `dpr.models.source.resolve_model` (as the fingerprint does), loads only the tower(s)
asked for, always in fp32 (autocast supplies lower precision; a checkpoint saved in fp16/bf16 would otherwise train
in that dtype and break GradScaler), and applies the option overrides once.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Literal

import torch
from transformers import PreTrainedTokenizerBase

from dpr.models.encoder import Encoder, EncoderSettings, load_tokenizer
from dpr.models.source import (  # noqa: F401
    P_SUFFIX,
    Q_SUFFIX,
    ModelDirs,
    TowerOptions,
    apply_settings_options,
    encoder_dirs,
    resolve_model,
)
from dpr.utils.io import InputError

Need = Literal["question", "passage", "both"]
LOAD_DTYPE = torch.float32


@dataclass
class Towers:
    question: Encoder | None
    passage: Encoder | None
    tokenizer: PreTrainedTokenizerBase


def _load(path: str, settings: EncoderSettings | None) -> Encoder:
    return Encoder.from_pretrained(path, settings, dtype=LOAD_DTYPE)


def _load_single(dirs: ModelDirs, settings: EncoderSettings | None) -> Encoder:
    from dpr.models.pretrained import missing_model_message

    try:
        return _load(dirs.question, settings)
    except OSError as e:
        if dirs.local:
            raise
        raise InputError(dirs.source, missing_model_message(dirs.source)) from e


def load_towers(options: TowerOptions, need: Need = "both") -> Towers:
    """The tower(s) `need` asks for (the other is None), in fp32, with the options applied.

    A pair source (checkpoint or question_encoder/ + passage_encoder/ dir) gives its two towers (with `shared`, the
    question tower serves both). A single encoder (HF dir or registry name) serves both: as one module with `shared`
    or when only one tower is needed, else as two independent copies (training both towers from one start).
    """
    if need not in ("question", "passage", "both"):
        raise ValueError(f"need must be 'question', 'passage' or 'both', not {need!r}")
    dirs = resolve_model(options.source)
    if dirs.pair:
        q_dir, p_dir = dirs.question, dirs.passage
        if options.shared and need == "both":
            need_q, need_p = True, False
        else:
            need_q, need_p = need in ("question", "both"), need in ("passage", "both")
        q = _load(q_dir, None) if need_q else None
        p = _load(p_dir, None) if need_p else None
        if options.shared and need == "both":
            p = q
    else:
        encoder = _load_single(dirs, None)
        q = encoder if need in ("question", "both") else None
        p = encoder if need in ("passage", "both") else None
        if need == "both" and not options.shared:
            p = copy.deepcopy(encoder)
    tokenizer = load_tokenizer(dirs.tokenizer)
    for enc in {id(e): e for e in (q, p) if e is not None}.values():
        apply_options(enc, options)
    return Towers(q, p, tokenizer)


def apply_options(encoder: Encoder, options: TowerOptions) -> None:
    """The options' overrides of the tower's stored settings."""
    apply_settings_options(encoder.settings, options)


def load_encoder_pair(
    path: str | os.PathLike, settings: EncoderSettings | None = None
) -> tuple[Encoder, Encoder, PreTrainedTokenizerBase]:
    """Both towers of `path` for inspection (a single encoder serves both as the same module object).

    `settings` replaces the stored settings of every tower. Scripts use `load_towers`.
    """
    dirs = resolve_model(path)
    if dirs.pair:
        return _load(dirs.question, settings), _load(dirs.passage, settings), load_tokenizer(dirs.tokenizer)
    encoder = _load_single(dirs, settings)
    return encoder, encoder, load_tokenizer(dirs.tokenizer)
