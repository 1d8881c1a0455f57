"""What a model reference is: the one place that turns `--model_file` / `--pretrained_model_cfg` (a training
checkpoint prefix, a directory with question_encoder/ + passage_encoder/, one HF or sentence-transformers directory,
a registry name, a hub name) into tower directories, and the flags into `TowerOptions`.

The loader (dpr/models/loading.py) and the fingerprint (dpr/models/fingerprint.py) both read what `resolve_model`
says, so the files that are hashed are the files that are loaded: the same tokenizer, the same weights (in a
sentence-transformers directory, wherever modules.json puts the Transformer module), the same settings.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dpr.utils.io import InputError

Q_SUFFIX, P_SUFFIX = ".question_encoder", ".passage_encoder"
Side = Literal["question", "passage"]


def model_source(model_file: str | None, pretrained_model_cfg: str | None) -> str:
    """The model a script runs with: --model_file when given, else --pretrained_model_cfg (the one place that says
    so)."""
    return str(model_file or pretrained_model_cfg)


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


def encoder_dirs(path: str | os.PathLike) -> tuple[str, str] | None:
    """(question dir, passage dir) for a training checkpoint file or a dir holding both towers; None otherwise."""
    base = Path(path)
    for q, c in ((Path(str(base) + Q_SUFFIX), Path(str(base) + P_SUFFIX)),
                 (base / "question_encoder", base / "passage_encoder")):
        if q.is_dir() and c.is_dir():
            return str(q), str(c)
    return None


@dataclass(frozen=True)
class ModelDirs:
    """The towers of a model reference. `question` / `passage`: each tower's directory (its settings live there;
    its weights in `weights_dir(...)`); one directory for both when `pair` is False. `local` is False for a hub name
    that is not on this disk (then the directories are that name, for `from_pretrained` to fetch)."""

    source: str
    question: str
    passage: str
    pair: bool
    local: bool = True

    def tower(self, side: Side) -> str:
        return self.question if side == "question" else self.passage

    @property
    def tokenizer(self) -> str:
        """The tokenizer both towers are tokenized with (the question tower's): loaded and hashed from here."""
        return self.question


def weights_dir(tower: str | os.PathLike) -> Path:
    """Where a tower's HF model files (weights, config.json, tokenizer) are: the Transformer module's folder of a
    sentence-transformers directory (read from modules.json: the directory itself or e.g. 0_Transformer/), else the
    directory."""
    from dpr.models.sentence_transformers_dir import transformer_dir

    return transformer_dir(tower)


def resolve_model(source: str | os.PathLike) -> ModelDirs:
    """The tower directories of a model reference (a registry name is built into its cache directory first).

    A checkpoint file whose tower directories are missing is an InputError; a name that is neither local nor in the
    hub cache comes back with `local` False (the loader then tries the hub and says what to do when it cannot).
    """
    source = str(source)
    pair = encoder_dirs(source)
    if pair is not None:
        return ModelDirs(source, pair[0], pair[1], pair=True)
    if Path(source).is_file():
        name = Path(source).name
        raise InputError(source, f"a training checkpoint, but its encoder directories ({name}{Q_SUFFIX}/, "
                                 f"{name}{P_SUFFIX}/) are missing beside it")
    from dpr.models.pretrained import resolve_model_path

    resolved = resolve_model_path(source)
    if not Path(resolved).expanduser().is_dir():
        snapshot = _hub_snapshot(resolved)
        if snapshot is None:
            return ModelDirs(source, resolved, resolved, pair=False, local=False)
        resolved = snapshot
    return ModelDirs(source, resolved, resolved, pair=False)


def _hub_snapshot(name: str) -> str | None:
    """The local snapshot directory of a Hugging Face hub model already in the cache (nothing is downloaded)."""
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:
        return None  # a path, not a repo id
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(name, local_files_only=True)
    except Exception:  # not cached, not a repo id, or no huggingface_hub: the loader reports it
        return None
    return path if Path(path).is_dir() else None


def apply_settings_options(s, options: TowerOptions) -> None:
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


def expected_settings(options: TowerOptions, side: Side, dirs: ModelDirs | None = None):
    """One tower's EncoderSettings as loading will give them: stored in its directory (dpr_encoder.json, else its
    sentence-transformers modules, else the defaults), then the options' overrides; known before any model is
    loaded (None when the model is not on this disk)."""
    from dpr.models.encoder import stored_settings

    dirs = dirs or resolve_model(options.source)
    if not dirs.local:
        return None
    tower = dirs.question if options.shared else dirs.tower(side)
    settings = dataclasses.replace(stored_settings(tower))
    apply_settings_options(settings, options)
    return settings
