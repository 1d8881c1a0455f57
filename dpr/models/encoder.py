"""One tower of the bi-encoder: any HF AutoModel plus pooling, optional L2 normalisation and text prefixes.

The settings travel with every checkpoint in `dpr_encoder.json`, so encoding and retrieval always do what
training did. `save_pretrained` also writes sentence-transformers module files, so that library loads the same
pooling and normalisation.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from dpr.utils.io import InputError, atomic_write

SETTINGS_FILE = "dpr_encoder.json"
Kind = Literal["query", "passage"]


@dataclass
class EncoderSettings:
    """How a tower turns token states into one vector, and how texts are prepared for it."""

    pooling: Literal["cls", "mean"] = "cls"
    normalize: bool = False
    query_prefix: str = ""
    passage_prefix: str = ""
    lowercase: bool = False

    def __post_init__(self) -> None:
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', not {self.pooling!r}")

    def prepare(self, texts: list[str], kind: Kind) -> list[str]:
        """Apply lowercasing and the query/passage prefix."""
        prefix = self.query_prefix if kind == "query" else self.passage_prefix
        if self.lowercase:
            texts = [t.lower() for t in texts]
        return [prefix + t for t in texts] if prefix else list(texts)

    def save(self, directory: str | os.PathLike) -> None:
        with atomic_write(Path(directory) / SETTINGS_FILE) as f:
            json.dump(dataclasses.asdict(self), f, indent=2, ensure_ascii=False)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "EncoderSettings | None":
        """Settings stored in `directory`, or None when it has none (a plain HF checkpoint)."""
        path = Path(directory) / SETTINGS_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            names = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in names})
        except (ValueError, TypeError) as e:
            raise InputError(path, f"bad encoder settings: {e}") from None


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, settings: EncoderSettings) -> torch.Tensor:
    """Pool [B, T, H] token states to [B, H] (fp32), then L2-normalise when asked."""
    hidden = hidden.float()
    if settings.pooling == "cls":
        out = hidden[:, 0]
    else:
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        out = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    return F.normalize(out, dim=-1) if settings.normalize else out


def _load_backbone(path: str, **kwargs) -> PreTrainedModel:
    try:
        try:
            return AutoModel.from_pretrained(path, add_pooling_layer=False, **kwargs)
        except TypeError:  # architectures without an optional pooler
            return AutoModel.from_pretrained(path, **kwargs)
    except pickle.UnpicklingError as e:  # torch.load(weights_only=True) met something other than tensors
        raise InputError(path, f"refused: its pickled weights file holds more than tensors, and loading it could run "
                               f"code ({str(e).splitlines()[-1][:200]})") from None
    except RuntimeError as e:
        if "mismatched_sizes" not in str(e) and "size mismatch" not in str(e):
            raise
        raise InputError(path, "the weights do not fit the shapes in its config.json (a weights file from a "
                               "different model shape?)") from e


class Encoder(nn.Module):
    """An HF backbone and its pooling settings; forward returns one fp32 vector per text."""

    def __init__(self, model: PreTrainedModel, settings: EncoderSettings | None = None):
        super().__init__()
        self.model = model
        self.settings = settings or EncoderSettings()

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.model(**kwargs).last_hidden_state
        return pool(hidden, attention_mask, self.settings)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, settings: EncoderSettings | None = None, **kwargs) -> "Encoder":
        """Load from an HF directory; settings: explicit > stored in the directory > defaults (cls pooling)."""
        path = str(path)
        settings = settings or EncoderSettings.load(path) or EncoderSettings()
        return cls(_load_backbone(path, **kwargs), settings).eval()

    def save_pretrained(self, directory: str | os.PathLike, tokenizer: PreTrainedTokenizerBase | None = None) -> None:
        """Write a standard HF directory (+ tokenizer, settings, sentence-transformers modules)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in self.model.state_dict().items()}
        self.model.save_pretrained(directory, state_dict=state)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)
        self.settings.save(directory)
        write_sentence_transformers_files(directory, self.hidden_size, self.settings)


def write_sentence_transformers_files(directory: Path, dim: int, settings: EncoderSettings) -> None:
    """modules.json + pooling config, so `SentenceTransformer(directory)` pools and normalises as we do."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if settings.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (directory / "2_Normalize").mkdir(exist_ok=True)
    pooling = {"word_embedding_dimension": dim, "pooling_mode_cls_token": settings.pooling == "cls",
               "pooling_mode_mean_tokens": settings.pooling == "mean"}
    (directory / "1_Pooling").mkdir(exist_ok=True)
    with atomic_write(directory / "1_Pooling" / "config.json") as f:
        json.dump(pooling, f, indent=2)
    with atomic_write(directory / "modules.json") as f:
        json.dump(modules, f, indent=2)
    prompts = {"query": settings.query_prefix, "passage": settings.passage_prefix}
    with atomic_write(directory / "config_sentence_transformers.json") as f:
        json.dump({"prompts": prompts, "default_prompt_name": None, "similarity_fn_name": "cosine" if settings.normalize else "dot"}, f, indent=2, ensure_ascii=False)


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(path))


def tokenize(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """Tokenize and pad to the longest text of this list (max_length is a cap, not a target)."""
    return tokenizer(texts, max_length=max_length, truncation=True, padding="longest", return_tensors="pt")
