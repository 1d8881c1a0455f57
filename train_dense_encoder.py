"""Train the DPR bi-encoder (question + passage towers) with in-batch and hard negatives, optionally with an exact
gradient cache. Run with python for one device or `torchrun --nproc_per_node N` for data parallelism."""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from dpr.models.encoder import Encoder
from dpr.models.loading import TowerOptions, load_towers
from dpr.options import ModelFlags, add_length_args, add_precision_args, setup_logging
from dpr.training import checkpoint as ckpt
from dpr.training.config import DEVICE_SIZED, TrainConfig, TrainFlags
from dpr.training.data import BiEncoderData
from dpr.training.trainer import (
    DistInfo,
    Trainer,
    check_attention_dropout_off,
    enable_gradient_checkpointing,
    set_attention_dropout,
)
from dpr.utils.cli import fail, run_script
from dpr.utils.device_defaults import ModelShape
from dpr.utils.flags import ConfigParser, add_flags
from dpr.utils.io import InputError, check_writable_dir

logger = logging.getLogger("train_dense_encoder")


def build_parser() -> ConfigParser:
    """The flags, declared in dpr/training/config.py; its parse_args returns a TrainFlags."""
    parser = ConfigParser(TrainFlags, description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    groups = add_flags(parser, TrainFlags, only=ModelFlags)  # the model flags first, as in every script
    add_precision_args(parser)
    add_length_args(parser)
    add_flags(parser, TrainFlags, groups, exclude=ModelFlags)
    return parser


def init_distributed(timeout_minutes: float = 30.0) -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group (NCCL on CUDA, gloo on CPU); a failed or hung collective ends the job after
    `timeout_minutes` instead of the 2-hour default."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistInfo(), torch.device("cuda" if torch.cuda.is_available() else "cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")  # tear the process down on a NCCL error
    else:
        device, backend = torch.device("cpu"), "gloo"
    dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
    return DistInfo(dist.get_rank(), dist.get_world_size()), device


def tower_options(flags: TrainFlags, source: str) -> TowerOptions:
    """The model flags' towers, from `source`, with --similarity's normalisation and --shared_encoder."""
    return replace(flags.tower_options(), source=source, normalize=flags.normalize, shared=flags.shared_encoder)


def load_models(flags: TrainFlags, resume_from: str | None) -> tuple[Encoder, Encoder, object]:
    """Towers from a checkpoint being resumed, else --model_file (starting weights only), else --pretrained_model_cfg; fp32,
    two independent towers unless --shared_encoder."""
    towers = load_towers(tower_options(flags, resume_from or flags.model_name))
    for enc in {id(towers.question): towers.question, id(towers.passage): towers.passage}.values():
        if flags.gradient_checkpointing:
            enable_gradient_checkpointing(enc)
        if flags.freeze_embeddings:
            enc.model.get_input_embeddings().weight.requires_grad_(False)
        if flags.attention_dropout is not None:
            try:
                set_attention_dropout(enc, flags.attention_dropout)
                if flags.attention_dropout == 0:
                    check_attention_dropout_off(enc)
            except ValueError as e:
                fail(f"--attention_dropout {flags.attention_dropout}: {e}")
    return towers.question, towers.passage, towers.tokenizer


def build_config(flags: TrainFlags, normalize: bool, device: torch.device,
                 shape: ModelShape | None = None) -> TrainConfig:
    """The resolved config of this run (TrainConfig.resolved, for this process's share of the ranks); logs the
    device-sized values the flags left unset."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    config = flags.resolved(device, normalize, shape, world_size=world, local_ranks=local)
    filled = [name for name in DEVICE_SIZED if getattr(flags, name) is None]
    if filled and os.environ.get("RANK", "0") == "0":
        logger.info("device defaults (%s): %s", device.type if shape else "cpu",
                    ", ".join(f"{name} {getattr(config, name)}" for name in filled))
    return config


def resume_checkpoint(flags: TrainFlags) -> tuple[str | None, list[Path], str]:
    """The one rule: --resume continues the run in --output_dir (its latest checkpoint); anything else is a fresh
    run, which must not mix its checkpoints with another run's (refused unless --overwrite_output_dir, which deletes
    them). --model_file only ever gives starting weights (load_models). Returns (the checkpoint to resume or None,
    what to delete, why); nothing is deleted here: remove_leftovers runs once the models and data have loaded."""
    out, prefix = flags.output_dir, flags.checkpoint_file_name
    if flags.resume:
        latest = ckpt.latest_checkpoint(out, prefix)
        if latest is not None:
            if flags.model_file:
                logger.warning("--resume continues %s; --model_file %s is not used", latest, flags.model_file)
            return str(latest), [], ""
        # no complete checkpoint: what is there is this run's own, killed before its first save completed (an
        # incomplete tower set, a best record naming a checkpoint that never completed)
        leftovers = ckpt.run_files(out, prefix) + ckpt.save_temps(out, prefix)
        logger.info("--resume: no complete checkpoint in %s yet, starting fresh%s", out,
                    f" (removing {len(leftovers)} leftovers of a start killed before its first checkpoint)"
                    if leftovers else "")
        return None, leftovers, "--resume without a complete checkpoint"
    return None, ckpt.claim_output_dir(out, prefix, flags.overwrite_output_dir), "--overwrite_output_dir"


def remove_leftovers(found: list[Path], why: str, output_dir: str, dist_info: DistInfo) -> None:
    """Delete what resume_checkpoint found, on rank 0 once every rank is ready to train (models, data and every
    input check done), right before the first step: a kill after this resumes nothing of the old run."""
    dist_info.barrier()
    if found and dist_info.is_main:
        ckpt.remove_run_files(found, output_dir, why)
    dist_info.barrier()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def main(argv: list[str] | None = None) -> dict:
    flags = build_parser().parse_args(argv)
    setup_logging()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    dist_info, device = init_distributed(flags.dist_timeout_minutes)
    try:
        if flags.batch_size < dist_info.world_size:
            fail(f"--batch_size {flags.batch_size} is the global batch and must be >= the number of ranks "
 f"({dist_info.world_size})")
        check_writable_dir(flags.output_dir)
        resume_from, leftovers, why = resume_checkpoint(flags)
        if resume_from is None:
            ckpt.check_not_removed(flags.model_name, leftovers, why)
        seed_everything(flags.seed + dist_info.rank)
        q_enc, p_enc, tokenizer = load_models(flags, resume_from)
        q_enc.to(device)
        p_enc.to(device)
        config = build_config(flags, q_enc.settings.normalize, device, ModelShape.of(q_enc))
        if dist_info.is_main:
            logger.info("similarity %s, temperature %g, pooling %s, precision %s, grad cache %s, device %s",
                        config.similarity, config.temperature, q_enc.settings.pooling, config.precision,
                        config.grad_cache, device)
        train = BiEncoderData(config.train_file, config.max_train_questions)
        dev = BiEncoderData(config.dev_file, config.max_dev_questions) if config.dev_file else None
        if dist_info.is_main:
            logger.info("train: %d questions (%d without positive skipped), %d distinct passages (%.1f MB text)",
                        len(train), train.skipped_no_positive, len(train.passages), len(train.passages.blob) / 1e6)
        trainer = Trainer(config, q_enc, p_enc, tokenizer, train, dev, device, dist_info)
        if resume_from:
            logger.info("resuming from %s", resume_from)
            state = ckpt.load_state(resume_from)
            try:
                trainer.load_state_dict(state)
            except (ValueError, KeyError) as e:  # e.g. optimizer groups of another model or --freeze_embeddings
                raise InputError(resume_from, f"this training state does not fit the model and flags of this run: "
                                              f"{type(e).__name__}: {e}") from None
            if trainer.finished:
                logger.info("--resume: the run in %s (run %s) already finished its %d epochs (%d steps): nothing to "
                            "do", flags.output_dir, trainer.progress.run_id, config.num_train_epochs,
                            trainer.progress.global_step)
                return trainer.progress.best
        if trainer.total_steps == 0:
            fail(f"--train_file {flags.train_file}: {len(train)} questions give no training step (--batch_size "
                 f"{flags.batch_size} on {dist_info.world_size} ranks)")
        remove_leftovers(leftovers, why, flags.output_dir, dist_info)
        steps_before = trainer.progress.global_step
        best = trainer.fit()
        if trainer.progress.global_step == steps_before:
            fail(f"asked to train {trainer.total_steps - steps_before} steps, trained none ({flags.output_dir})")
        return best
    except InputError as e:
        fail(str(e))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(run_script(lambda: main(sys.argv[1:])))
