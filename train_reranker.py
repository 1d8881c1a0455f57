"""Train the cross-encoder reranker ([CLS] question [SEP] passage [SEP] -> one logit) listwise: each question's
positive against group_size-1 negatives from a DPR training file, softmax cross-entropy over the group. Run with
python for one device or `torchrun --nproc_per_node N` for data parallelism. The chosen checkpoint's reranker
directory (PREFIX.E.I.reranker/) is what `dense_retriever.py --reranker` and sentence-transformers' CrossEncoder
load."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch.distributed as dist

from dpr.data.collection_meta import sibling_ids_enabled
from dpr.models.cross_encoder import CrossEncoder, load_cross_encoder, new_cross_encoder
from dpr.options import add_precision_args, setup_logging
from dpr.training import checkpoint as ckpt
from dpr.training.reranker_config import RerankerFlags
from dpr.training.reranker_data import RerankData, dev_candidates, read_run_negatives
from dpr.training.reranker_trainer import RerankerTrainer, model_dir
from dpr.training.trainer import set_attention_dropout
from dpr.utils.cli import fail, run_script
from dpr.utils.device_defaults import ModelShape
from dpr.utils.flags import ConfigParser, add_flags
from dpr.utils.io import InputError, check_writable_dir
from train_dense_encoder import init_distributed, remove_leftovers, seed_everything

logger = logging.getLogger("train_reranker")


def build_parser() -> ConfigParser:
    """The flags, declared in dpr/training/reranker_config.py; its parse_args returns a RerankerFlags."""
    parser = ConfigParser(RerankerFlags, description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_flags(parser, RerankerFlags)
    add_precision_args(parser)
    return parser


def is_reranker_dir(path: str) -> bool:
    """A directory holding a one-label sequence-classification model (ours or sentence-transformers')."""
    from dpr.models.cross_encoder import read_settings

    try:
        read_settings(path)
    except InputError:
        return False
    return os.path.isdir(path)


def load_model(flags: RerankerFlags, resume_from: str | None) -> tuple[CrossEncoder, str]:
    """The cross-encoder of a checkpoint being resumed, else --model_file (a reranker dir: as it is; an encoder: a
    new head), else --pretrained_model_cfg with a new head; the run's pair settings in every case."""
    config = flags.config()
    if resume_from:
        source = str(model_dir(resume_from))
        ce = load_cross_encoder(source)
    elif flags.model_file and is_reranker_dir(flags.model_file):
        source = flags.model_file
        ce = load_cross_encoder(source)
    else:
        source = flags.model_file or flags.pretrained_model_cfg
        ce = new_cross_encoder(source, config.settings)
    if ce.settings != config.settings and not resume_from:
        logger.info("pair settings %s (the flags'), replacing %s stored with %s", config.settings, ce.settings, source)
    ce.settings = config.settings
    if flags.freeze_embeddings:
        ce.model.get_input_embeddings().weight.requires_grad_(False)
    if flags.attention_dropout is not None:
        try:
            set_attention_dropout(ce, flags.attention_dropout)
        except ValueError as e:
            fail(f"--attention_dropout {flags.attention_dropout}: {e}")
    return ce, source


def resume_checkpoint(flags: RerankerFlags) -> tuple[str | None, list[Path], str]:
    """The bi-encoder's rule (train_dense_encoder.resume_checkpoint) for the reranker's checkpoint layout: --resume
    continues the run in --output_dir from its latest complete checkpoint; without one, this run's own leftovers
    are removed; a fresh run refuses another run's files unless --overwrite_output_dir. Returns (the checkpoint to
    resume or None, what to delete, why); nothing is deleted here (remove_leftovers, once all has loaded)."""
    out, prefix, suffixes = flags.output_dir, flags.checkpoint_file_name, ckpt.RERANKER_SUFFIXES
    if flags.resume:
        latest = ckpt.latest_checkpoint(out, prefix, suffixes)
        if latest is not None:
            if flags.model_file:
                logger.warning("--resume continues %s; --model_file %s is not used", latest, flags.model_file)
            return str(latest), [], ""
        leftovers = ckpt.run_files(out, prefix, suffixes) + ckpt.save_temps(out, prefix)
        logger.info("--resume: no complete checkpoint in %s yet, starting fresh%s", out,
                    f" (removing {len(leftovers)} leftovers of a start killed before its first checkpoint)"
                    if leftovers else "")
        return None, leftovers, "--resume without a complete checkpoint"
    return None, ckpt.claim_output_dir(out, prefix, flags.overwrite_output_dir, suffixes), "--overwrite_output_dir"


def main(argv: list[str] | None = None) -> dict:
    flags = build_parser().parse_args(argv)
    setup_logging()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    dist_info, device = init_distributed(flags.dist_timeout_minutes)
    try:
        if flags.batch_size < dist_info.world_size:
            fail(f"--batch_size {flags.batch_size} is the global batch and must be >= the number of ranks "
                 f"({dist_info.world_size})")
        if flags.q_sequence_length + 4 > flags.max_seq_length:
            fail(f"--max_seq_length {flags.max_seq_length} leaves no room for a passage after --q_sequence_length "
                 f"{flags.q_sequence_length} and the special tokens")
        sibling_ids, why = sibling_ids_enabled(flags.sibling_ids, flags.ctx_file or flags.train_file)
        train = RerankData(flags.train_file, flags.max_train_questions, sibling_ids)
        if flags.dev_run and not flags.dev_file:
            fail("--dev_run gives negatives to --dev_file's questions: pass --dev_file too")
        run = read_run_negatives(flags.dev_run, flags.dev_candidates) if flags.dev_run else None
        dev = RerankData(flags.dev_file, flags.max_dev_questions, sibling_ids, run) if flags.dev_file else None
        if dev is not None and not dev_candidates(dev, flags.dev_candidates).questions:
            fail(f"--dev_file {flags.dev_file}: no question has a negative to rank against (validation needs the "
                 f"file's hard_negative_ctxs, e.g. step 1's dev_with_hn.json, or --dev_run: a first-stage run of the dev "
                 f"questions)")
        check_writable_dir(flags.output_dir)  # inputs read and checked: now the output may be touched
        resume_from, leftovers, why = resume_checkpoint(flags)
        if resume_from is None:
            ckpt.check_not_removed(flags.model_file or flags.pretrained_model_cfg, leftovers, why)
        seed_everything(flags.seed + dist_info.rank)
        ce, source = load_model(flags, resume_from)
        ce.model.to(device)
        config = flags.config().resolved(device, ModelShape.of(ce.model), dist_info.world_size,
                                         int(os.environ.get("LOCAL_WORLD_SIZE", str(dist_info.world_size))))
        if dist_info.is_main:
            logger.info("train: %d questions (%d without positive skipped), %d distinct passages, %d listed "
                        "negatives dropped by the exclusion rule; paragraph-sibling rule %s (%s)", len(train),
                        train.skipped_no_positive, len(train.passages), train.rejected_negatives,
                        "on" if sibling_ids else "off", why)
            logger.info("model %s, pairs %s, precision %s, device %s", source, config.settings, config.precision,
                        device)
        trainer = RerankerTrainer(config, ce, train, dev, device, dist_info, source)
        if resume_from:
            logger.info("resuming from %s", resume_from)
            try:
                trainer.load_state_dict(ckpt.load_state(resume_from))
            except (ValueError, KeyError) as e:
                raise InputError(resume_from, f"this training state does not fit the model and flags of this run: "
                                              f"{type(e).__name__}: {e}") from None
            if trainer.finished:
                logger.info("--resume: the run in %s already finished its %d epochs: nothing to do",
                            flags.output_dir, config.num_train_epochs)
                return trainer.progress.best
        if trainer.total_steps == 0:
            fail(f"--train_file {flags.train_file}: {len(train)} questions give no training step (--batch_size "
                 f"{flags.batch_size} on {dist_info.world_size} ranks)")
        remove_leftovers(leftovers, why, flags.output_dir, dist_info)
        return trainer.fit()
    except InputError as e:
        fail(str(e))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(run_script(lambda: main(sys.argv[1:])))
