"""Train the DPR bi-encoder (question + passage towers) with in-batch and hard negatives, optionally with an exact
gradient cache. Run with python for one device or `torchrun --nproc_per_node N` for data parallelism."""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from dpr.models.encoder import Encoder
from dpr.models.loading import TowerOptions, load_towers
from dpr.models.source import model_source
from dpr.options import add_length_args, add_model_args, add_precision_args, positive_int, setup_logging
from dpr.training import checkpoint as ckpt
from dpr.training.config import TrainConfig, default_temperature
from dpr.training.data import BiEncoderData
from dpr.training.trainer import (DistInfo, Trainer, check_attention_dropout_off, enable_gradient_checkpointing,
                                  set_attention_dropout)
from dpr.utils.device_defaults import ModelShape, device_defaults, resolve
from dpr.utils.cli import fail
from dpr.utils.io import InputError, check_writable_dir
from dpr.utils.precision import dtype_name, resolve_amp_dtype

logger = logging.getLogger("train_dense_encoder")


def non_negative_int(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return n


def positive_float(value: str) -> float:
    x = float(value)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return x


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_args(parser)
    for action in parser._actions:  # the shared flag: here it is starting weights only, never a resume
        if action.dest == "model_file":
            action.help = ("Starting weights: an HF encoder dir, a question_encoder/ + passage_encoder/ dir, or a "
                           "checkpoint dpr_biencoder.E.I of another run (its towers only). Always a NEW run: its own "
                           "schedule, optimizer and --output_dir. To continue a run, use --resume.")
    add_precision_args(parser)
    add_length_args(parser)
    d = parser.add_argument_group("data")
    d.add_argument("--train_file", required=True, help="DPR JSON training file (e.g. dual_train.json).")
    d.add_argument("--dev_file", default=None, help="DPR JSON dev file with negatives (e.g. dev_with_hn.json).")
    d.add_argument("--hard_negatives", type=non_negative_int, default=1,
                   help="Hard negatives per question, sampled from hard_negative_ctxs (topped up from negative_ctxs).")
    d.add_argument("--other_negatives", type=non_negative_int, default=0,
                   help="Other negatives per question, sampled from negative_ctxs (topped up from hard_negative_ctxs).")
    d.add_argument("--shuffle_positive_ctx", action="store_true",
                   help="Train each question on a random one of its positives each epoch (drawn from seed, epoch, "
                        "question). Default: always its first positive, as DPR. Negatives vary per epoch either way.")
    d.add_argument("--max_train_questions", type=non_negative_int, default=0,
                   help="Use only the first N questions of --train_file (0: all); for smoke runs.")
    d.add_argument("--max_dev_questions", type=non_negative_int, default=0,
                   help="Use only the first N questions of --dev_file (0: all).")
    d.add_argument("--num_workers", type=non_negative_int, default=None,
                   help="DataLoader workers that sample, tokenize and pad batches (default: for the device: 2 on CPU; "
                        "on CUDA half the cores per GPU process, 2 to 8).")
    t = parser.add_argument_group("training")
    t.add_argument("--output_dir", required=True, help="Checkpoints, train_log.jsonl and training_curves.png go here.")
    t.add_argument("--batch_size", type=positive_int, default=2,
                   help="GLOBAL batch: questions per optimizer step over all ranks; with torchrun each rank takes "
                        "batch_size/world_size. Every question is scored against every passage of the global batch "
                        "(questions and passages are gathered from all ranks).")
    t.add_argument("--learning_rate", type=positive_float, default=1e-5)
    t.add_argument("--num_train_epochs", type=positive_int, default=3)
    t.add_argument("--warmup_steps", type=non_negative_int, default=100, help="Linear warmup, then linear decay to 0.")
    t.add_argument("--max_grad_norm", type=float, default=1.0, help="Clip the global gradient norm (<= 0: no clipping).")
    t.add_argument("--weight_decay", type=float, default=0.0)
    t.add_argument("--adam_eps", type=float, default=1e-8)
    t.add_argument("--seed", type=int, default=0, help="Seeds everything; epoch order and negatives come from seed+epoch.")
    t.add_argument("--similarity", choices=["dot", "cosine"], default=None,
                   help="Score function (default: cosine for encoders that L2-normalise, e.g. e5; dot otherwise). "
                        "cosine makes the saved encoders normalise their output.")
    t.add_argument("--temperature", type=positive_float, default=None,
                   help="Scores are divided by this (default: 0.01 for cosine, 1.0 for dot).")
    t.add_argument("--shared_encoder", action="store_true", help="One tower for questions and passages.")
    t.add_argument("--gradient_checkpointing", action="store_true", help="Recompute activations in backward.")
    t.add_argument("--freeze_embeddings", action="store_true",
                   help="Keep the word-embedding matrix fixed (e5-small: 96M of its 118M parameters). Much faster "
                        "steps on CPU and a smaller checkpoint; useful when fine-tuning on little data.")
    t.add_argument("--attention_dropout", type=float, default=None, metavar="P",
                   help="Attention-probability dropout while training (default: the model's, 0.1 for BERT/e5). 0 lets "
                        "torch use its fused attention kernel: on 2 CPU cores a 32-question e5-small step is 1.34x "
                        "faster in fp32 and 1.14x in bf16 (README, bf16 section); its effect on accuracy is "
                        "measured once there.")
    g = parser.add_argument_group("gradient cache")
    g.add_argument("--grad_cache", action="store_true",
                   help="Exact gradient caching: encode in chunks without a graph, then re-encode chunk by chunk "
                        "(same dropout) to backpropagate. Same gradients as without, memory of one chunk.")
    g.add_argument("--q_chunk_size", type=positive_int, default=None,
                   help="Questions per chunk with --grad_cache (a chunk larger than the per-rank batch is one chunk). "
                        "Default: for the device: 16 on CPU; on CUDA sized from the card's memory, the model and "
                        "--q_sequence_length (dpr/utils/device_defaults.py; the log says what was chosen).")
    g.add_argument("--ctx_chunk_size", type=positive_int, default=None,
                   help="Passages per chunk with --grad_cache. Default: for the device: 8 on CPU; on CUDA sized as "
                        "--q_chunk_size is, for --p_sequence_length.")
    g.add_argument("--global_loss_buf_sz", type=int, default=None,
                   help="Accepted for compatibility, no effect (DPR/GC-DPR's pickle buffer size; representations are "
                        "gathered with all_gather here).")
    v = parser.add_argument_group("validation")
    v.add_argument("--dev_batch_size", type=positive_int, default=4, help="Questions per in-batch NLL dev batch.")
    v.add_argument("--val_av_rank_start_epoch", type=non_negative_int, default=10000,
                   help="From this (0-based) epoch on, validate with DPR's average rank instead of in-batch NLL.")
    v.add_argument("--val_av_rank_max_qs", type=positive_int, default=10000, help="Dev questions in average rank.")
    v.add_argument("--val_av_rank_hard_neg", type=non_negative_int, default=30, help="Hard negatives per question.")
    v.add_argument("--val_av_rank_other_neg", type=non_negative_int, default=30, help="Other negatives per question.")
    v.add_argument("--val_av_rank_bsz", type=positive_int, default=None,
                   help="Encoding batch for average rank (default: for the device: 128 on CPU; on CUDA sized from "
                        "the card's memory).")
    c = parser.add_argument_group("checkpoints and logging")
    c.add_argument("--checkpoint_file_name", default=ckpt.PREFIX, help="Checkpoint prefix: PREFIX.EPOCH.ITER.")
    c.add_argument("--resume", action="store_true",
                   help="Continue the run in --output_dir from its latest checkpoint (model, optimizer, scheduler, "
                        "scaler, RNG, data position, run id); with no checkpoint there yet, start fresh. A run that "
                        "had already finished: nothing to do. --model_file never resumes: it gives starting weights.")
    c.add_argument("--overwrite_output_dir", action="store_true",
                   help="A fresh run (no --resume) refuses an --output_dir holding another run's checkpoints; with "
                        "this flag it deletes them (and that run's best_checkpoint.json) first.")
    c.add_argument("--keep_checkpoints", type=non_negative_int, default=0, metavar="N",
                   help="Keep only this run's newest N checkpoints plus its best (0: keep all). Another run's files "
                        "are never deleted.")
    c.add_argument("--save_every_steps", type=non_negative_int, default=0,
                   help="Also checkpoint every N steps within an epoch (0: only at epoch ends).")
    c.add_argument("--eval_every_steps", type=non_negative_int, default=0, metavar="N",
                   help="Also validate every N steps within an epoch, with the best-record metric: points for the log "
                        "and training_curves.png only (no checkpoint, not in the best record). 0: epoch ends only.")
    c.add_argument("--log_batch_step", type=positive_int, default=100, help="Log a line every N steps.")
    c.add_argument("--no_progress", action="store_true", help="No tqdm bar.")
    c.add_argument("--dist_timeout_minutes", type=positive_float, default=30.0,
                   help="torchrun: a collective that waits longer than this fails the job (e.g. every other rank "
                        "waiting for a rank 0 that died in validation); NCCL also aborts on that error.")
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


def tower_options(args: argparse.Namespace, source: str) -> TowerOptions:
    return TowerOptions(source=source, pooling=args.pooling, lowercase=args.do_lower_case,
                        normalize=None if args.similarity is None else args.similarity == "cosine",
                        shared=args.shared_encoder, query_prefix=args.query_prefix, passage_prefix=args.passage_prefix)


def load_models(args: argparse.Namespace, resume_from: str | None) -> tuple[Encoder, Encoder, object]:
    """Towers from a checkpoint being resumed, else --model_file (starting weights only), else --pretrained_model_cfg; fp32,
    two independent towers unless --shared_encoder."""
    source = resume_from or model_source(args.model_file, args.pretrained_model_cfg)
    towers = load_towers(tower_options(args, source))
    for enc in {id(towers.question): towers.question, id(towers.passage): towers.passage}.values():
        if args.gradient_checkpointing:
            enable_gradient_checkpointing(enc)
        if args.freeze_embeddings:
            enc.model.get_input_embeddings().weight.requires_grad_(False)
        if args.attention_dropout is not None:
            try:
                set_attention_dropout(enc, args.attention_dropout)
                if args.attention_dropout == 0:
                    check_attention_dropout_off(enc)
            except ValueError as e:
                fail(f"--attention_dropout {args.attention_dropout}: {e}")
    return towers.question, towers.passage, towers.tokenizer


def device_sized(args: argparse.Namespace, device: torch.device, shape: ModelShape | None) -> dict[str, int]:
    """--q_chunk_size, --ctx_chunk_size, --num_workers, --val_av_rank_bsz as given, else the device's defaults
    (dpr/utils/device_defaults.py; without the model's `shape`, the CPU ones)."""
    explicit = {"q_chunk_size": args.q_chunk_size, "ctx_chunk_size": args.ctx_chunk_size,
                "num_workers": args.num_workers, "encode_batch": args.val_av_rank_bsz}
    if shape is None:
        device = torch.device("cpu")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    defaults = device_defaults(device, shape or ModelShape(0, 0, 0), args.q_sequence_length, args.p_sequence_length,
                               -(-args.batch_size // world), 1 + args.hard_negatives + args.other_negatives,
                               local_ranks=local)
    sizes, filled = resolve(explicit, defaults)
    if filled and (os.environ.get("RANK", "0") == "0"):
        logger.info("device defaults (%s): %s", device.type, ", ".join(f"{k} {sizes[k]}" for k in filled))
    return sizes


def build_config(args: argparse.Namespace, normalize: bool, device: torch.device,
                 shape: ModelShape | None = None) -> TrainConfig:
    """The typed config of this run: every flag the trainer uses, with similarity, temperature and precision resolved
    (similarity from the loaded towers when not given) and the device-sized flags left unset filled in."""
    similarity = args.similarity or ("cosine" if normalize else "dot")
    sized = device_sized(args, device, shape)
    return TrainConfig(
        train_file=args.train_file, output_dir=args.output_dir, dev_file=args.dev_file,
        hard_negatives=args.hard_negatives, other_negatives=args.other_negatives,
        shuffle_positive_ctx=args.shuffle_positive_ctx, max_train_questions=args.max_train_questions,
        max_dev_questions=args.max_dev_questions, num_workers=sized["num_workers"],
        q_sequence_length=args.q_sequence_length, p_sequence_length=args.p_sequence_length,
        batch_size=args.batch_size, learning_rate=args.learning_rate, num_train_epochs=args.num_train_epochs,
        warmup_steps=args.warmup_steps, max_grad_norm=args.max_grad_norm, weight_decay=args.weight_decay,
        adam_eps=args.adam_eps, seed=args.seed, similarity=similarity,
        temperature=args.temperature or default_temperature(similarity),
        precision=dtype_name(resolve_amp_dtype(device, args.precision)),
        grad_cache=args.grad_cache, q_chunk_size=sized["q_chunk_size"], ctx_chunk_size=sized["ctx_chunk_size"],
        dev_batch_size=args.dev_batch_size, val_av_rank_start_epoch=args.val_av_rank_start_epoch,
        val_av_rank_max_qs=args.val_av_rank_max_qs, val_av_rank_hard_neg=args.val_av_rank_hard_neg,
        val_av_rank_other_neg=args.val_av_rank_other_neg, val_av_rank_bsz=sized["encode_batch"],
        checkpoint_file_name=args.checkpoint_file_name, save_every_steps=args.save_every_steps,
        keep_checkpoints=args.keep_checkpoints, eval_every_steps=args.eval_every_steps,
        log_batch_step=args.log_batch_step, progress_bar=not args.no_progress,
    )


def resume_checkpoint(args: argparse.Namespace, dist_info: DistInfo) -> str | None:
    """The one rule: --resume continues the run in --output_dir (its latest checkpoint); anything else is a fresh
    run, which must not mix its checkpoints with another run's (refused unless --overwrite_output_dir, which deletes
    them). --model_file only ever gives starting weights (load_models)."""
    if args.resume:
        latest = ckpt.latest_checkpoint(args.output_dir, args.checkpoint_file_name)
        if latest is not None:
            if args.model_file:
                logger.warning("--resume continues %s; --model_file %s is not used", latest, args.model_file)
            return str(latest)
        logger.info("--resume: no checkpoint in %s yet, starting fresh", args.output_dir)
    found = ckpt.claim_output_dir(args.output_dir, args.checkpoint_file_name, args.overwrite_output_dir)
    dist_info.barrier()  # every rank has looked before rank 0 deletes
    if found and dist_info.is_main:
        ckpt.remove_run_files(found, args.output_dir)
    dist_info.barrier()
    return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    setup_logging()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    dist_info, device = init_distributed(args.dist_timeout_minutes)
    try:
        if args.batch_size < dist_info.world_size:
            fail(f"--batch_size {args.batch_size} is the global batch and must be >= the number of ranks "
 f"({dist_info.world_size})")
        check_writable_dir(args.output_dir)
        resume_from = resume_checkpoint(args, dist_info)
        seed_everything(args.seed + dist_info.rank)
        q_enc, p_enc, tokenizer = load_models(args, resume_from)
        q_enc.to(device)
        p_enc.to(device)
        config = build_config(args, q_enc.settings.normalize, device, ModelShape.of(q_enc))
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
                            "do", args.output_dir, trainer.progress.run_id, config.num_train_epochs,
                            trainer.progress.global_step)
                return trainer.progress.best
        if trainer.total_steps == 0:
            fail(f"--train_file {args.train_file}: {len(train)} questions give no training step (--batch_size "
                 f"{args.batch_size} on {dist_info.world_size} ranks)")
        steps_before = trainer.progress.global_step
        best = trainer.fit()
        if trainer.progress.global_step == steps_before:
            fail(f"asked to train {trainer.total_steps - steps_before} steps, trained none ({args.output_dir})")
        return best
    except InputError as e:
        fail(str(e))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
