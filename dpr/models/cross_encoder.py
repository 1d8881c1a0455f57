"""The cross-encoder (reranker): `[CLS] question [SEP] passage [SEP]` -> one logit, carried by transformers'
sequence-classification model with one label, and its sentence-transformers import/export.

Saved directories are plain transformers sequence-classification directories: config.json carries
`"sentence_transformers": {"activation_fn": "torch.nn.modules.activation.Sigmoid"}` (so sentence-transformers 5 and
6 load it as a CrossEncoder whose `predict` is sigmoid(logit)), no modules.json (version 6 would read it as a module
list), the tokenizer's `model_max_length` is the training pair length (else sentence-transformers truncates at 512),
and `dpr_reranker.json` records the settings and a content fingerprint. A CrossEncoder saved by sentence-transformers
(either version) loads too, with settings read from its files.

`tokenize_pairs` is the one pair-tokenizing rule of training and scoring.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from dpr.models import sentence_transformers_dir as st
from dpr.models.tokens import pad_batch, padding_of
from dpr.utils.io import InputError, atomic_dir, write_json

RERANKER_FILE = "dpr_reranker.json"
FORMAT_VERSION = 1
SIGMOID = "torch.nn.modules.activation.Sigmoid"
LOAD_DTYPE = torch.float32
_UNBOUNDED = 1_000_000  # a tokenizer's model_max_length above this means "no limit recorded"


@dataclass(frozen=True)
class CrossEncoderSettings:
    """How pairs are prepared for the model (recorded with it, used by every reader instead of the run's flags)."""

    max_length: int  # pair length cap in tokens (question + passage + special tokens) the model was trained with
    q_max_length: int  # question tokens kept inside the pair (special tokens not counted)
    do_lower_case: bool = False  # lowercase question and passage before tokenization

    def __post_init__(self) -> None:
        if self.max_length < 4 or self.q_max_length < 1:
            raise ValueError(f"max_length must be >= 4 and q_max_length >= 1 (got {self.max_length}, "
                             f"{self.q_max_length})")


@dataclass
class CrossEncoder:
    """A one-logit sequence-classification model, its tokenizer and its pair settings."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    settings: CrossEncoderSettings


# ---------------------------------------------------------------- pairs

def _cut_questions(tokenizer: PreTrainedTokenizerBase, questions: list[str], cap: int) -> list[str]:
    """Each question's text up to the end of its `cap`-th token (unchanged when shorter)."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(questions, add_special_tokens=False, truncation=True, max_length=cap,
                        return_offsets_mapping=True, return_attention_mask=False, return_token_type_ids=False)
        out = []
        for q, offsets in zip(questions, enc["offset_mapping"]):
            out.append(q[: offsets[-1][1]] if offsets and len(offsets) >= cap else q)
        return out
    return [tokenizer.convert_tokens_to_string(t[:cap]) if len(t := tokenizer.tokenize(q)) > cap else q
            for q in questions]


def pair_ids(tokenizer: PreTrainedTokenizerBase, settings: CrossEncoderSettings, questions: list[str],
             passages: list[str]) -> tuple[list[list[int]], list[list[int]] | None]:
    """(token ids, token type ids or None when the tokenizer has none) of each (question, passage) pair, unpadded.

    The rule: lowercase both when the settings say so; keep the question's first q_max_length tokens; then cut the
    passage so that the pair with its special tokens fits max_length. Passages come formatted as the project formats
    them (dpr.data.formats.passage_input: 'title text')."""
    if len(questions) != len(passages):
        raise ValueError(f"{len(questions)} questions but {len(passages)} passages")
    if not questions:
        return [], None
    if settings.do_lower_case:
        questions, passages = [q.lower() for q in questions], [p.lower() for p in passages]
    room = settings.max_length - tokenizer.num_special_tokens_to_add(pair=True) - 1  # at least one passage token
    questions = _cut_questions(tokenizer, list(questions), max(1, min(settings.q_max_length, room)))
    enc = tokenizer(questions, list(passages), truncation="only_second", max_length=settings.max_length,
                    return_attention_mask=False)
    types = enc.get("token_type_ids")
    return enc["input_ids"], (list(types) if types is not None else None)


def pad_pairs(ids: list[list[int]], types: list[list[int]] | None, tokenizer: PreTrainedTokenizerBase,
              pin_memory: bool = False) -> dict[str, torch.Tensor]:
    """Pad pairs to their longest member (dpr.models.tokens.pad_batch; type ids padded with 0 on the same side)."""
    pad_id, left = padding_of(tokenizer)
    input_ids, mask = pad_batch(ids, pad_id, left, pin_memory)
    out = {"input_ids": input_ids, "attention_mask": mask}
    if types is not None:
        out["token_type_ids"] = pad_batch(types, 0, left, pin_memory)[0]
    return out


def tokenize_pairs(ce: CrossEncoder, questions: list[str], passages: list[str]) -> dict[str, torch.Tensor]:
    """(question, passage) pairs as padded model inputs (pair_ids + pad_pairs)."""
    ids, types = pair_ids(ce.tokenizer, ce.settings, questions, passages)
    return pad_pairs(ids, types, ce.tokenizer)


# ---------------------------------------------------------------- the model

def _fp32_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast(x.device.type, enabled=False):
        return nn.functional.linear(x.float(), self.weight.float(), None if self.bias is None else self.bias.float())


def keep_head_fp32(model: PreTrainedModel) -> None:
    """Run the output projection(s) (the Linear layers giving num_labels outputs) in fp32 even under autocast: bf16
    logits have 8 bits of mantissa and tie. Idempotent; the state dict is unchanged."""
    n = int(model.config.num_labels)
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.out_features == n and "forward" not in module.__dict__:
            module.forward = _fp32_forward.__get__(module)


def pair_logits(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """One float32 logit per pair, shape (B,)."""
    keep_head_fp32(model)
    return model(**batch).logits.float().reshape(-1)


class PairScorer(nn.Module):
    """(input_ids, attention_mask[, token_type_ids]) -> one float32 logit per pair (the head kept in fp32): a
    cross-encoder as the encoding routine's pair runner calls it."""

    def __init__(self, model: PreTrainedModel):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor | None = None) -> torch.Tensor:
        batch = {"input_ids": ids, "attention_mask": mask}
        if types is not None:
            batch["token_type_ids"] = types
        return pair_logits(self.model, batch)


def _classification_model(path: str, **kwargs) -> PreTrainedModel:
    """AutoModelForSequenceClassification in fp32, a weights file that holds more than tensors refused."""
    from dpr.models.encoder import _unpickling_error, from_pretrained_kwargs

    try:
        return AutoModelForSequenceClassification.from_pretrained(
            path, **from_pretrained_kwargs({"dtype": LOAD_DTYPE, **kwargs}))
    except (pickle.UnpicklingError, OSError) as e:
        refusal = _unpickling_error(e)
        if refusal is None:
            raise InputError(path, f"cannot load a sequence-classification model: {str(e).splitlines()[0][:300]}"
                             ) from None
        raise InputError(path, "refused: its pickled weights file holds more than tensors, and loading it could run "
                               "code") from None
    except (RuntimeError, ValueError) as e:
        raise InputError(path, f"cannot load a sequence-classification model: {str(e).splitlines()[0][:300]}"
                         ) from None


def new_cross_encoder(source: str, settings: CrossEncoderSettings) -> CrossEncoder:
    """A cross-encoder with a new one-logit head on the encoder `source` (a local HF or sentence-transformers
    directory, a registry name such as multilingual-e5-small, a bi-encoder checkpoint: its passage tower)."""
    from transformers.utils import logging as hf_logging

    from dpr.models.pretrained import missing_model_message
    from dpr.models.source import resolve_model, weights_dir

    dirs = resolve_model(source)
    if not dirs.local:
        raise InputError(source, missing_model_message(source))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the new head is "newly initialized" by design
    try:
        model = _classification_model(str(weights_dir(dirs.passage)), num_labels=1)
    finally:
        hf_logging.set_verbosity(verbosity)
    tokenizer = AutoTokenizer.from_pretrained(str(weights_dir(dirs.tokenizer)))
    keep_head_fp32(model)
    return CrossEncoder(model, tokenizer, settings)


def cross_encoder_fingerprint(path: str | os.PathLike) -> str:
    """sha256 over what makes a reranker score what it does: weights, config.json (minus the transformers version),
    tokenizer files, and the pair settings it is used with."""
    from dpr.models.fingerprint import _digest, tokenizer_sha256, weight_parts

    d = st.transformer_dir(path)
    parts = weight_parts(d)
    parts.append(("tokenizer", tokenizer_sha256(d)))
    settings = dataclasses.asdict(read_settings(path))
    parts.append(("settings", hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()))
    return _digest(parts)


def save_cross_encoder(ce: CrossEncoder, out_dir: str | os.PathLike, extra: dict | None = None) -> None:
    """Write `out_dir` atomically (a reader sees the old directory or the whole new one): the transformers
    directory, the sentence-transformers activation in config.json, the tokenizer with model_max_length = the pair
    length, and dpr_reranker.json (settings, fingerprint, `extra` such as the training run's provenance)."""
    model, tokenizer = ce.model, ce.tokenizer
    with atomic_dir(out_dir) as tmp:
        model.config.sentence_transformers = {"activation_fn": SIGMOID}
        state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
        model.save_pretrained(tmp, state_dict=state)
        old_max = tokenizer.model_max_length
        tokenizer.model_max_length = ce.settings.max_length
        try:
            tokenizer.save_pretrained(tmp)
        finally:
            tokenizer.model_max_length = old_max
        write_json(tmp / RERANKER_FILE, {"format": FORMAT_VERSION, "settings": dataclasses.asdict(ce.settings),
                                         **(extra or {})})
        info = json.loads((tmp / RERANKER_FILE).read_text(encoding="utf-8"))
        info["fingerprint"] = cross_encoder_fingerprint(tmp)
        write_json(tmp / RERANKER_FILE, info)


def _json(path: Path) -> dict:
    from dpr.utils.io import read_json

    obj = read_json(path)
    if not isinstance(obj, dict):
        raise InputError(path, "expected a JSON object")
    return obj


def _check_classifier(directory: Path) -> dict:
    """config.json of a one-label sequence-classification model, else a one-line error naming the file."""
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise InputError(directory, "not a cross-encoder: no config.json (expected a transformers "
                                    "sequence-classification directory with one label)")
    config = _json(config_path)
    archs = config.get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in archs):
        raise InputError(config_path, f"not a cross-encoder: architectures {archs} (expected a "
                                      "...ForSequenceClassification model with one label)")
    labels = len(config["id2label"]) if isinstance(config.get("id2label"), dict) else config.get("num_labels", 2)
    if labels != 1:
        raise InputError(config_path, f"not a reranker: {labels} labels (a reranker gives one score per pair)")
    return config


def read_settings(path: str | os.PathLike) -> CrossEncoderSettings:
    """The pair settings of a reranker directory: dpr_reranker.json, else what a sentence-transformers CrossEncoder's
    files say (max_seq_length, else the tokenizer's model_max_length, else the model's positions; its lowercasing)."""
    path = Path(path)
    ours = path / RERANKER_FILE
    if ours.is_file():
        info = _json(ours)
        try:
            return CrossEncoderSettings(**info["settings"])
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(ours, f"bad reranker settings: {e}") from None
    d = st.transformer_dir(path)
    config = _check_classifier(d)
    st_config = {}
    for where in (d / st.ST_CONFIG_FILE, path / st.ST_CONFIG_FILE):
        if where.is_file():
            st_config = _json(where)
            break
    positions = int(config.get("max_position_embeddings") or 512)
    max_length = st_config.get("max_seq_length")
    if not isinstance(max_length, int):
        tok_config = _json(d / "tokenizer_config.json") if (d / "tokenizer_config.json").is_file() else {}
        max_length = tok_config.get("model_max_length")
        if not isinstance(max_length, int) or max_length > _UNBOUNDED:
            max_length = positions
    max_length = min(int(max_length), positions)
    # sentence-transformers caps the pair only: the question keeps all the room the pair leaves it
    return CrossEncoderSettings(max_length=max_length, q_max_length=max_length,
                                do_lower_case=bool(st_config.get("do_lower_case", False)))


def stored_info(path: str | os.PathLike) -> dict:
    """dpr_reranker.json of a directory we saved ({} for one saved elsewhere)."""
    ours = Path(path) / RERANKER_FILE
    return _json(ours) if ours.is_file() else {}


def load_cross_encoder(path: str | os.PathLike) -> CrossEncoder:
    """A reranker directory saved here or by sentence-transformers (5 or 6), in fp32, eval mode."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(path, "no such reranker directory")
    modules = st.read_modules(path)
    if modules is not None:
        kinds = [st._kind(m) for m in modules]
        if kinds != ["Transformer"]:
            raise InputError(path / st.MODULES_FILE, f"modules {kinds}: a sentence-transformers CrossEncoder has one "
                                                     "Transformer module (is this a bi-encoder?)")
    d = st.transformer_dir(path)
    _check_classifier(d)
    settings = read_settings(path)
    model = _classification_model(str(d))
    tokenizer = AutoTokenizer.from_pretrained(str(d))
    keep_head_fp32(model)
    return CrossEncoder(model.eval(), tokenizer, settings)
