"""Training flags declared once: train_dense_encoder.py's parser is generated from the field metadata in
dpr/training/config.py, each flag's default is the field's (shown once in --help), and a parsed value reaches the
trainer through one resolve step."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import torch

from dpr.training.config import DEVICE_SIZED, TrainConfig, TrainFlags
from dpr.training.data import BiEncoderData
from dpr.training.trainer import DistInfo, Trainer
from dpr.utils.flags import flag_fields
from train_dense_encoder import build_config, build_parser, load_models

ROOT = Path(__file__).resolve().parents[2]
SHARED = {"precision", "q_sequence_length", "p_sequence_length"}  # the shared helpers' flags (dpr/options.py)


def _option_help(help_text: str, option: str) -> str:
    """The --help entry of `option`: from its line to the next option's."""
    entry = re.search(rf"^  {re.escape(option)}\b.*?(?=^  -|^\S|\Z)", help_text, re.S | re.M)
    assert entry, option
    return " ".join(entry.group(0).split())


def test_every_flagged_field_is_a_flag_with_its_default_shown_once():
    parser = build_parser()
    text = parser.format_help()
    for f in flag_fields(TrainFlags):
        invert = f.metadata["flag"]["invert"]
        option, default = (f"--{invert}", not f.default) if invert else (f"--{f.name}", f.default)
        entry = _option_help(text, option)
        assert entry.endswith(f"(default: {default})") and entry.count(f"(default: {default})") == 1, entry
    dests = {a.dest for a in parser._actions if a.option_strings and a.dest != "help"}
    fields = {f.name for f in dataclasses.fields(TrainFlags)}
    assert dests - fields == {"no_progress"} and fields - dests == {"progress_bar"}  # the one inverted flag
    assert {f.name for f in dataclasses.fields(TrainFlags)} - {f.name for f in flag_fields(TrainFlags)} == SHARED


def test_the_script_declares_no_flag_and_copies_no_field():
    script = (ROOT / "train_dense_encoder.py").read_text(encoding="utf-8")
    assert "add_argument(" not in script and "learning_rate" not in script


def test_resolving_leaves_nothing_unset_and_a_resolved_config_is_kept():
    flags = build_parser().parse_args(["--train_file", "t", "--output_dir", "o"])
    assert {name: getattr(flags, name) for name in DEVICE_SIZED} == dict.fromkeys(DEVICE_SIZED)
    assert (flags.similarity, flags.temperature, flags.precision) == (None, None, "auto")
    config = flags.resolved(torch.device("cpu"), normalize=True)
    assert type(config) is TrainConfig and None not in [getattr(config, name) for name in DEVICE_SIZED]
    assert (config.similarity, config.temperature) == ("cosine", 0.01) and config.precision != "auto"
    assert config.resolved(torch.device("cpu"), normalize=False) == config


def test_learning_rate_flag_reaches_the_optimizer(tiny_model_dir, tiny_train_file, tmp_path):
    flags = build_parser().parse_args(["--pretrained_model_cfg", str(tiny_model_dir), "--train_file",
                                       str(tiny_train_file), "--output_dir", str(tmp_path), "--learning_rate",
                                       "0.0123", "--num_workers", "0", "--precision", "fp32"])
    q, p, tok = load_models(flags, None)
    config = build_config(flags, q.settings.normalize, torch.device("cpu"))
    trainer = Trainer(config, q, p, tok, BiEncoderData(tiny_train_file), None, torch.device("cpu"), DistInfo())
    assert trainer.config.learning_rate == 0.0123
    assert {g["initial_lr"] for g in trainer.optimizer.param_groups} == {0.0123}
