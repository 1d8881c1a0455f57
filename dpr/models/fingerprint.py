"""Content fingerprints of a model's towers and tokenizer, computed from the files on disk without loading the model.

A fingerprint is a sha256 over file *contents* (never paths or mtimes), so vectors encoded on one machine can be
checked against the model on another. It covers exactly what changes an encoding: a tower's weight files, its
architecture (config.json without the transformers version) and its stored encoder settings (pooling, normalisation,
prefixes, lowercasing, as dpr_encoder.json or the sentence-transformers module files give them); the tokenizer's
vocabulary and settings files, of the one tokenizer the loader uses. Which files those are is decided by
`dpr.models.source.resolve_model`, for the loader and the fingerprint alike.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from dpr.models.source import ModelDirs, resolve_model, weights_dir
from dpr.utils.io import InputError, file_sha256

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


def _settings_digest(tower: Path) -> str:
    """sha256 of the encoder settings a tower directory stores (whichever file holds them)."""
    import dataclasses

    from dpr.models.encoder import stored_settings

    return hashlib.sha256(json.dumps(dataclasses.asdict(stored_settings(tower)), sort_keys=True).encode()).hexdigest()


def weight_parts(d: Path) -> list[tuple[str, str]]:
    """(name, sha256) of a model folder's weight files, in name order, then its config.json's digest: what both the
    tower and the cross-encoder fingerprints hash of the weights."""
    files = sorted({p for pattern in WEIGHT_PATTERNS for p in d.glob(pattern) if p.is_file()})
    if not files:
        raise InputError(d, "no weight files (*.safetensors, pytorch_model*.bin) to fingerprint")
    parts = [(p.name, file_sha256(p)) for p in files]
    if (d / "config.json").is_file():
        parts.append(("config.json", _config_digest(d / "config.json")))
    return parts


def tower_sha256(directory: str | os.PathLike) -> str:
    """Fingerprint of one tower directory: its weight files and config.json (by content, in name order, from the
    Transformer module's folder of a sentence-transformers directory) and its stored encoder settings."""
    tower = Path(directory)
    parts = weight_parts(weights_dir(tower))
    parts.append(("settings", _settings_digest(tower)))
    return _digest(parts)


def tokenizer_sha256(directory: str | os.PathLike) -> str:
    """Fingerprint of the tokenizer files of a tower directory (by content, in name order)."""
    d = weights_dir(directory)
    parts = [(name, file_sha256(d / name)) for name in sorted(TOKENIZER_FILES) if (d / name).is_file()]
    if not parts:
        raise InputError(d, "no tokenizer files to fingerprint")
    return _digest(parts)


def dirs_fingerprint(dirs: ModelDirs) -> ModelFingerprint | None:
    """The fingerprint of resolved tower directories (None when they are not on this disk)."""
    if not dirs.local:
        return None
    p_hash = tower_sha256(dirs.passage)
    q_hash = p_hash if dirs.question == dirs.passage else tower_sha256(dirs.question)
    return ModelFingerprint(question_tower=q_hash, passage_tower=p_hash, tokenizer=tokenizer_sha256(dirs.tokenizer))


def model_fingerprint(model: str) -> ModelFingerprint | None:
    """The fingerprint of a model reference from its files, or None when they are not on this disk."""
    return dirs_fingerprint(resolve_model(model))
