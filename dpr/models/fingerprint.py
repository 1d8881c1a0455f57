"""Content fingerprints of a model's towers and tokenizer, computed from the files on disk without loading the model.

A fingerprint is a sha256 over file *contents* (never paths or mtimes), so vectors encoded on one machine can be
checked against the model on another. A tower's fingerprint covers its weight files and its architecture
(config.json without the transformers version); the tokenizer's covers its vocabulary and settings files.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from dpr.utils.io import file_sha256

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "sentencepiece.bpe.model",
                   "spiece.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


@dataclass(frozen=True)
class ModelFingerprint:
    """What a bi-encoder checkpoint is, by content: both towers (they pair) and the tokenizer."""

    question_tower: str
    passage_tower: str
    tokenizer: str


def _digest(parts: list[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for name, value in parts:
        h.update(f"{name}\0{value}\n".encode())
    return h.hexdigest()


def _config_digest(path: Path) -> str:
    """sha256 of config.json's content, minus the field that names the transformers version that wrote it."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return file_sha256(path)
    config.pop("transformers_version", None)
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def tower_sha256(directory: str | os.PathLike) -> str:
    """Fingerprint of one tower directory: its weight files and config.json (by content, in name order)."""
    d = Path(directory)
    files = sorted({p for pattern in WEIGHT_PATTERNS for p in d.glob(pattern) if p.is_file()})
    if not files:
        raise FileNotFoundError(f"{d}: no weight files (*.safetensors, pytorch_model*.bin) to fingerprint")
    parts = [(p.name, file_sha256(p)) for p in files]
    if (d / "config.json").is_file():
        parts.append(("config.json", _config_digest(d / "config.json")))
    return _digest(parts)


def tokenizer_sha256(directory: str | os.PathLike) -> str:
    """Fingerprint of the tokenizer files in `directory` (by content, in name order)."""
    d = Path(directory)
    parts = [(name, file_sha256(d / name)) for name in sorted(TOKENIZER_FILES) if (d / name).is_file()]
    if not parts:
        raise FileNotFoundError(f"{d}: no tokenizer files to fingerprint")
    return _digest(parts)


def tower_directories(model: str) -> tuple[str, str] | None:
    """(question dir, passage dir) of a model reference, or None when it is not on this disk (a hub name).

    Same resolution as the loader: a training checkpoint's two directories, or one directory serving both towers.
    """
    from dpr.models.loading import encoder_dirs
    from dpr.models.pretrained import resolve_model_path

    pair = encoder_dirs(model)
    if pair is not None:
        return pair
    if Path(model).is_file():
        return None  # a checkpoint file without its directories: the loader says so
    resolved = resolve_model_path(str(model))
    if not Path(resolved).is_dir():
        resolved = _hub_snapshot(resolved)
    return (resolved, resolved) if resolved and Path(resolved).is_dir() else None


def _hub_snapshot(name: str) -> str | None:
    """The local snapshot directory of a Hugging Face hub model already in the cache (nothing is downloaded)."""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name, local_files_only=True)
    except Exception:  # not cached, not a repo id, or no huggingface_hub: the loader reports it
        return None


def model_fingerprint(model: str) -> ModelFingerprint | None:
    """The fingerprint of a model reference from its files, or None when they are not on this disk."""
    dirs = tower_directories(model)
    if dirs is None:
        return None
    q_dir, p_dir = dirs
    p_hash = tower_sha256(p_dir)
    q_hash = p_hash if q_dir == p_dir else tower_sha256(q_dir)
    try:
        tok = tokenizer_sha256(p_dir)
    except FileNotFoundError:
        tok = tokenizer_sha256(q_dir)
    return ModelFingerprint(question_tower=q_hash, passage_tower=p_hash, tokenizer=tok)

