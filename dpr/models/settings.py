"""How a tower turns token states into one vector and how texts are prepared for it (`EncoderSettings`, stored as
dpr_encoder.json beside the weights): a leaf module, so that the encoder and the sentence-transformers files both
import it without importing each other."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dpr.utils.io import InputError, atomic_write

SETTINGS_FILE = "dpr_encoder.json"
Kind = Literal["query", "passage"]
POOLING_MODES = ("cls", "mean", "max", "lasttoken")


@dataclass
class EncoderSettings:
    """How a tower turns token states into one vector, and how texts are prepared for it."""

    pooling: Literal["cls", "mean", "max", "lasttoken"] = "cls"
    normalize: bool = False
    query_prefix: str = ""
    passage_prefix: str = ""
    lowercase: bool = False

    def __post_init__(self) -> None:
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, not {self.pooling!r}")

    def prepare(self, texts: list[str], kind: Kind) -> list[str]:
        """Prefix with the query/passage prefix, then lowercase the whole text when asked (as sentence-transformers'
        do_lower_case does, prompt included)."""
        prefix = self.query_prefix if kind == "query" else self.passage_prefix
        texts = [prefix + t for t in texts] if prefix else list(texts)
        return [t.lower() for t in texts] if self.lowercase else texts

    def save(self, directory: str | os.PathLike) -> None:
        with atomic_write(Path(directory) / SETTINGS_FILE) as f:
            json.dump(dataclasses.asdict(self), f, indent=2, ensure_ascii=False)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> EncoderSettings | None:
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
