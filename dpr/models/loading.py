"""Load the (question, passage) encoder pair from whatever a user passes as --model_file / --pretrained_model_cfg."""
from __future__ import annotations

import os
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from dpr.models.encoder import Encoder, EncoderSettings, load_tokenizer
from dpr.utils.io import InputError

Q_SUFFIX, P_SUFFIX = ".question_encoder", ".passage_encoder"


def encoder_dirs(path: str | os.PathLike) -> tuple[str, str] | None:
    """(question dir, passage dir) for a training checkpoint file or a dir holding both towers; None otherwise."""
    p = Path(path)
    for q, c in ((Path(str(p) + Q_SUFFIX), Path(str(p) + P_SUFFIX)), (p / "question_encoder", p / "passage_encoder")):
        if q.is_dir() and c.is_dir():
            return str(q), str(c)
    return None


def load_encoder_pair(
    path: str | os.PathLike, settings: EncoderSettings | None = None
) -> tuple[Encoder, Encoder, PreTrainedTokenizerBase]:
    """Accepts a dpr_biencoder.E.I file, a dir with question_encoder/ + passage_encoder/, one HF dir, or a name.

    A single encoder (HF dir or registry name) serves both towers (the same module object).
    """
    pair = encoder_dirs(path)
    if pair is not None:
        q_dir, p_dir = pair
        return Encoder.from_pretrained(q_dir, settings), Encoder.from_pretrained(p_dir, settings), load_tokenizer(q_dir)
    if Path(path).is_file():
        raise InputError(path, f"a training checkpoint, but its encoder directories ({Path(path).name}{Q_SUFFIX}/, "
                               f"{Path(path).name}{P_SUFFIX}/) are missing beside it")
    from dpr.models.pretrained import missing_model_message, resolve_model_path

    resolved = resolve_model_path(str(path))
    try:
        encoder = Encoder.from_pretrained(resolved, settings)
    except OSError as e:
        if Path(resolved).is_dir():
            raise
        raise OSError(missing_model_message(str(path))) from e
    return encoder, encoder, load_tokenizer(resolved)
