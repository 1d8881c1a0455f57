"""One tower of the bi-encoder: any HF AutoModel plus pooling, optional L2 normalisation and text prefixes.

The settings travel with every checkpoint in `dpr_encoder.json`, so encoding and retrieval always do what
training did. `save_pretrained` also writes sentence-transformers module files (dpr.models.sentence_transformers_dir),
so that library encodes as we do; a sentence-transformers directory a user brings loads with its own settings.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from dpr.models import sentence_transformers_dir as st
from dpr.models.settings import POOLING_MODES, SETTINGS_FILE, EncoderSettings, Kind  # noqa: F401 (re-exported)
from dpr.utils.io import InputError


def stored_settings(path: str | os.PathLike) -> EncoderSettings:
    """What a tower directory says about itself: dpr_encoder.json, else its sentence-transformers modules, else the
    defaults (cls pooling, no normalisation, no prefixes)."""
    return EncoderSettings.load(path) or st.read_settings(str(path)) or EncoderSettings()


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, settings: EncoderSettings) -> torch.Tensor:
    """Pool [B, T, H] token states to [B, H] (fp32), then L2-normalise when asked."""
    hidden = hidden.float()
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if settings.pooling == "cls":  # the first real token, whichever side the padding is on
        first = attention_mask.argmax(1)
        out = hidden[torch.arange(hidden.shape[0], device=hidden.device), first]
    elif settings.pooling == "mean":
        out = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    elif settings.pooling == "max":
        out = hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).max(1).values
    else:  # lasttoken: the last real token, whichever side the padding is on
        last = attention_mask.shape[1] - 1 - attention_mask.flip(1).argmax(1)
        out = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    return F.normalize(out, dim=-1) if settings.normalize else out


def _has_pooler_weights(path: str) -> bool:
    """Whether the safetensors weights in `path` hold a pooler (False when unknown, e.g. a .bin file)."""
    directory = Path(path)
    if (directory / "model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(str(directory / "model.safetensors"), "pt") as f:
            keys = list(f.keys())
    elif (directory / "model.safetensors.index.json").is_file():
        try:
            keys = list(json.loads((directory / "model.safetensors.index.json").read_text())["weight_map"])
        except (ValueError, KeyError, TypeError):
            return False
    else:
        return False
    return any(".pooler." in f".{k}" for k in keys)


def from_pretrained_kwargs(kwargs: dict, version: str | None = None) -> dict:
    """`from_pretrained` keyword arguments as the installed transformers spells them: `dtype=` is `torch_dtype=`
    before 4.56 (4.45-4.55 pass an unknown `dtype` on to the model's constructor, a TypeError)."""
    import transformers

    major_minor = tuple(int(x) for x in (version or transformers.__version__).split(".")[:2])
    if "dtype" in kwargs and major_minor < (4, 56):
        kwargs = {k: v for k, v in kwargs.items() if k != "dtype"} | {"torch_dtype": kwargs["dtype"]}
    return kwargs


def _unpickling_error(e: BaseException | None) -> pickle.UnpicklingError | None:
    """The UnpicklingError `e` is or was raised from (its chain of causes and contexts), else None."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, pickle.UnpicklingError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _load_backbone(path: str, **kwargs) -> PreTrainedModel:
    """The HF model without its (unused) pooler, loaded so that transformers reports no missing or unexpected
    pooler weights: checkpoints that carry one load it and drop it."""
    kwargs = from_pretrained_kwargs(kwargs)
    try:
        if _has_pooler_weights(path):
            model = AutoModel.from_pretrained(path, **kwargs)
            if getattr(model, "pooler", None) is not None:
                model.pooler = None
            return model
        try:
            return AutoModel.from_pretrained(path, add_pooling_layer=False, **kwargs)
        except TypeError:  # architectures without an optional pooler
            return AutoModel.from_pretrained(path, **kwargs)
    except (pickle.UnpicklingError, OSError) as e:  # torch.load(weights_only=True) met something other than tensors
        refusal = _unpickling_error(e)  # transformers 4.x wraps it in an OSError
        if refusal is None:
            raise
        raise InputError(path, f"refused: its pickled weights file holds more than tensors, and loading it could run "
                               f"code ({str(refusal).splitlines()[-1][:200]})") from None
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

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled [B, H] vectors; `attention_mask` None: no padding in the batch (the model then gets no mask)."""
        kwargs = {"input_ids": input_ids}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.model(**kwargs).last_hidden_state
        return pool(hidden, torch.ones_like(input_ids) if attention_mask is None else attention_mask, self.settings)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, settings: EncoderSettings | None = None, **kwargs) -> Encoder:
        """Load from an HF or sentence-transformers directory; settings: explicit > stored in the directory
        (dpr_encoder.json) > its sentence-transformers modules > defaults (cls pooling)."""
        path = str(path)
        settings = settings or stored_settings(path)
        return cls(_load_backbone(str(st.transformer_dir(path)), **kwargs), settings).eval()

    def save_pretrained(self, directory: str | os.PathLike, tokenizer: PreTrainedTokenizerBase | None = None,
                        max_length: int | None = None) -> None:
        """Write a standard HF directory (+ tokenizer, settings, sentence-transformers modules truncating at
        max_length, the length this tower was trained with)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in self.model.state_dict().items()}
        state.update(placeholder_pooler(self.model))
        self.model.save_pretrained(directory, state_dict=state)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)
        self.settings.save(directory)
        st.write_sentence_transformers_files(directory, self.hidden_size, self.settings, max_length)


def placeholder_pooler(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """Pooler weights for a backbone loaded without its pooler (identity matrices, zero vectors), so that plain
    transformers and sentence-transformers load the saved directory without a "pooler ... MISSING, newly
    initialized" report. We never use the pooler (pooling reads the last hidden states); {} when not applicable."""
    if getattr(model, "pooler", 0) is not None:  # has a pooler already, or an architecture without one
        return {}
    try:
        with torch.device("meta"):
            shapes = {k: v.shape for k, v in type(model)(model.config).pooler.state_dict().items()}
    except Exception:  # an architecture whose constructor differs: save what it has
        return {}
    return {f"pooler.{k}": torch.eye(s[0]) if len(s) == 2 and s[0] == s[1] else torch.zeros(s)
            for k, s in shapes.items()}


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerBase:
    """The tokenizer of an HF directory (or of a sentence-transformers directory's Transformer module)."""
    return AutoTokenizer.from_pretrained(str(st.transformer_dir(path)))
