"""The reranker's training loop: listwise softmax cross-entropy over each question's group, AdamW with linear
warmup/decay (the bi-encoder trainer's), mixed precision, data parallelism over torch.distributed ranks (each rank
scores its share of the global batch; gradients summed), validation by reranked MRR@10, checkpoints with exact
resume, a JSON-lines log and the training plot."""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from dpr.encode import score_cross_encoder
from dpr.models.cross_encoder import CrossEncoder, pad_pairs, pair_ids, pair_logits, save_cross_encoder
from dpr.training import checkpoint as ckpt
from dpr.training.data import split_for_rank
from dpr.training.loss import listwise_ce
from dpr.training.plotting import plot_training_curves
from dpr.training.reranker_config import BEST_METRIC, RerankerConfig
from dpr.training.reranker_data import RerankData, dev_candidates, first_relevant_rank, group_rng, mrr_at_k
from dpr.training.trainer import (
    DistInfo,
    Progress,
    Trainer,
    apply_update,
    build_optimizer,
    linear_warmup_decay,
    load_optimizer_state,
    rank_batches,
    shared_run_id,
    sync_gradients,
)
from dpr.utils.device_defaults import ModelShape
from dpr.utils.io import atomic_write, remove_stale_temps
from dpr.utils.precision import autocast

logger = logging.getLogger(__name__)
LOG_FILE = "train_log.jsonl"
PLOT_FILE = "training_curves.png"
BEST_FILE = ckpt.BEST_FILE
SUFFIXES = ckpt.RERANKER_SUFFIXES


def model_dir(checkpoint: str | Path) -> Path:
    """The reranker directory of a checkpoint (what --reranker and sentence-transformers load)."""
    return Path(str(checkpoint) + ckpt.RERANKER_SUFFIX)


def freeze_output_bias(model: torch.nn.Module) -> None:
    """The output layer's bias gets no gradient from a listwise loss (it shifts every logit of a group alike); left
    trainable, AdamW would turn the float noise of its ~0 gradient into full-size steps of random sign."""
    n = int(model.config.num_labels)
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module.out_features == n and module.bias is not None:
            module.bias.requires_grad_(False)


class RerankerTrainer:
    def __init__(self, config: RerankerConfig, ce: CrossEncoder, train_data: RerankData,
                 dev_data: RerankData | None, device: torch.device, dist_info: DistInfo, source: str = ""):
        config = config.resolved(device, ModelShape.of(ce.model), dist_info.world_size)
        self.config, self.ce, self.model, self.device = config, ce, ce.model, device
        self.train_data, self.dev_data, self.dist, self.source = train_data, dev_data, dist_info, source
        self.amp_dtype = config.amp_dtype
        self.output_dir = Path(config.output_dir)
        freeze_output_bias(self.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if dist_info.world_size > 1:  # identical replicas (the new head is random per process otherwise)
            with torch.no_grad():
                for t in self.params + list(self.model.buffers()):
                    dist.broadcast(t.data, src=0)
        self.optimizer = build_optimizer([self.model], config.learning_rate, config.weight_decay, config.adam_eps)
        self.batches_per_epoch = len(self._batches(0))
        self.total_steps = self.batches_per_epoch * config.num_train_epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, partial(linear_warmup_decay, warmup=config.warmup_steps, total=self.total_steps))
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.progress = Progress(run_id=shared_run_id(dist_info.world_size))
        self.dev = dev_candidates(dev_data, config.dev_candidates) if dev_data is not None else None

    @property
    def finished(self) -> bool:
        return self.progress.epoch >= self.config.num_train_epochs

    def _batches(self, epoch: int) -> list[np.ndarray]:
        return rank_batches(len(self.train_data), self.config.batch_size, self.config.seed, epoch,
                            self.dist.world_size)

    # ----- state -----
    def state_dict(self) -> dict:
        rng = ckpt.rng_state()
        all_rng: list = [rng]
        if self.dist.world_size > 1:
            all_rng = [None] * self.dist.world_size
            dist.all_gather_object(all_rng, rng)
        p = self.progress
        return {"epoch": p.epoch, "iteration": p.iteration, "global_step": p.global_step,
                "skipped_steps": p.skipped_steps, "best": p.best, "log": p.log, "run_id": p.run_id,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": all_rng, "world_size": self.dist.world_size,
                "config": dataclasses.asdict(self.config), "kind": "reranker"}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "reranker":
            raise ValueError("a bi-encoder training state, not a reranker's")
        load_optimizer_state(self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.progress = Progress(epoch=state["epoch"], iteration=state["iteration"], global_step=state["global_step"],
                                 skipped_steps=state["skipped_steps"], best=state["best"], log=list(state["log"]),
                                 run_id=state["run_id"])
        if state.get("world_size") == self.dist.world_size:
            ckpt.set_rng_state(state["rng"][self.dist.rank])
        else:
            logger.warning("checkpoint was written by %s ranks, now %s: RNG streams are not restored",
                           state.get("world_size"), self.dist.world_size)
        if self.progress.iteration >= self.batches_per_epoch:
            self.progress.epoch, self.progress.iteration = self.progress.epoch + 1, 0
        saved = state.get("config") or {}
        for key in ("batch_size", "seed", "group_size", "learning_rate", "max_seq_length", "q_sequence_length"):
            if saved.get(key) != getattr(self.config, key):
                logger.warning("resuming with --%s %s (the checkpoint used %s)", key, getattr(self.config, key),
                               saved.get(key))

    # ----- one step -----
    def _amp(self):
        return autocast(self.device, self.amp_dtype)

    def _inputs(self, questions: list[str], passages: list[str]) -> dict[str, torch.Tensor]:
        ids, types = pair_ids(self.ce.tokenizer, self.ce.settings, questions, passages)
        return {k: v.to(self.device, non_blocking=True) for k, v in pad_pairs(ids, types, self.ce.tokenizer).items()}

    def groups(self, indices: np.ndarray, epoch: int) -> list[list[int]]:
        """Each question's group of passage indices (positive first), drawn from (seed, epoch, question)."""
        g, seed = self.config.group_size, self.config.seed
        return [self.train_data.group(int(i), g, group_rng(seed, epoch, int(i))) for i in indices]

    def train_step(self, batch: np.ndarray, epoch: int) -> tuple[float, int, bool, float]:
        """Forward/backward over this rank's share of global batch `batch` in chunks of whole groups, then one update;
        returns (mean loss over the global batch, groups ranked right, skipped, grad norm)."""
        c, data = self.config, self.train_data
        local = split_for_rank(batch, self.dist.rank, self.dist.world_size)
        groups = self.groups(local, epoch)
        total_loss = torch.zeros((), device=self.device)
        total_correct = torch.zeros((), dtype=torch.long, device=self.device)
        for s in range(0, len(local), c.groups_per_chunk):
            part = range(s, min(s + c.groups_per_chunk, len(local)))
            questions = [data.questions[int(local[k])] for k in part for _ in range(c.group_size)]
            passages = [data.passages[j] for k in part for j in groups[k]]
            with self._amp():
                logits = pair_logits(self.model, self._inputs(questions, passages))
            loss, correct = listwise_ce(logits, c.group_size)
            loss = loss / len(batch)  # the global batch's mean: rank sums then add up to it
            self.scaler.scale(loss).backward()
            total_loss += loss.detach()
            total_correct += correct
        sync_gradients(self.params)
        if self.dist.world_size > 1:
            stats = torch.stack([total_loss.float(), total_correct.float()])
            dist.all_reduce(stats)
            total_loss, total_correct = stats[0], stats[1]
        loss, correct, skipped, norm = apply_update(self.optimizer, self.scaler, self.params, c.max_grad_norm,
                                                    total_loss, total_correct)
        if not skipped:  # a skipped step (inf/nan gradients) neither updates nor advances the schedule
            self.scheduler.step()
        return float(loss), int(correct), skipped, norm

    # ----- loop -----
    def fit(self) -> dict:
        c, prog = self.config, self.progress
        if self.dist.is_main:
            for name in (LOG_FILE, PLOT_FILE, BEST_FILE):
                remove_stale_temps(self.output_dir / name)
            self.write_best_record()  # a resumed run's record is the restored state's, whatever was on disk
            logger.info("reranker training: %d questions, %d global batches/epoch of %d questions (%d per rank x %d "
                        "ranks), groups of %d, %d pairs per forward, %d epochs, %d steps, precision %s",
                        len(self.train_data), self.batches_per_epoch, c.batch_size,
                        c.per_rank_batch(self.dist.world_size), self.dist.world_size, c.group_size,
                        c.groups_per_chunk * c.group_size, c.num_train_epochs, self.total_steps, c.precision)
            logger.info("run %s; %s", prog.run_id, self.selection_rule())
        self.model.train()
        bar = tqdm(total=self.total_steps, initial=prog.global_step, unit="step", desc="train reranker",
                   disable=not self.dist.is_main or not c.progress_bar, dynamic_ncols=True)
        while prog.epoch < c.num_train_epochs:
            epoch, t0, seen = prog.epoch, time.time(), 0
            batches = self._batches(epoch)
            for batch in batches[prog.iteration:]:
                loss, correct, skipped, norm = self.train_step(batch, epoch)
                prog.iteration += 1
                prog.global_step += 1
                prog.skipped_steps += int(skipped)
                seen += len(batch)
                lr = self.scheduler.get_last_lr()[0]
                rate = seen * c.group_size / max(time.time() - t0, 1e-9)
                prog.log.append({"type": "step", "epoch": epoch, "iteration": prog.iteration, "step": prog.global_step,
                                 "loss": loss, "accuracy": correct / len(batch), "lr": lr, "grad_norm": norm,
                                 "skipped": bool(skipped), "pairs_per_s": rate})
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", pairs_s=f"{rate:.1f}")
                if self.dist.is_main and prog.global_step % c.log_batch_step == 0:
                    logger.info("epoch %d step %d/%d loss %.4f acc %.3f lr %.3e grad_norm %.3f skipped %d %.1f pairs/s",
                                epoch, prog.iteration, self.batches_per_epoch, loss, correct / len(batch), lr, norm,
                                prog.skipped_steps, rate)
                    self._write_log()
                within = prog.iteration < self.batches_per_epoch
                if c.eval_every_steps and prog.global_step % c.eval_every_steps == 0 and within:
                    self.validate(epoch, end_of_epoch=False)  # before a save at this step: its point is in the log
                if c.save_every_steps and prog.iteration % c.save_every_steps == 0 and within:
                    self.save(epoch, prog.iteration)
            self.validate(epoch)
            self.save(epoch, prog.iteration)
            prog.epoch, prog.iteration = epoch + 1, 0
        bar.close()
        if self.dist.is_main:
            self._write_log()
            plot_training_curves(self.progress.log, self.output_dir / PLOT_FILE)
            logger.info("done: %d steps, %d skipped (inf/nan); best %s", prog.global_step, prog.skipped_steps,
                        prog.best)
        return prog.best

    def save(self, epoch: int, iteration: int) -> None:
        path = ckpt.checkpoint_path(self.output_dir, epoch, iteration, self.config.checkpoint_file_name)
        saved = self.progress.epoch, self.progress.iteration
        self.progress.epoch, self.progress.iteration = epoch, iteration
        state = self.state_dict()
        self.progress.epoch, self.progress.iteration = saved
        if self.dist.is_main:
            extra = {"trained_by": "train_reranker.py", "run_id": self.progress.run_id, "epoch": epoch,
                     "iteration": iteration, "step": self.progress.global_step, "start": self.source,
                     "train_file": self.config.train_file, "group_size": self.config.group_size,
                     "loss": "listwise softmax cross-entropy"}
            ckpt.save_checkpoint_dirs(path, {ckpt.RERANKER_SUFFIX: lambda t: save_cross_encoder(self.ce, t, extra)},
                                      state)
            self.write_best_record()  # after the checkpoint it may name is complete
            self._write_log()
            logger.info("saved checkpoint %s (reranker directory %s)", path, model_dir(path))
            if self.config.keep_checkpoints:
                for old in ckpt.prune_checkpoints(self.output_dir, self.config.checkpoint_file_name,
                                                  self.progress.run_id, self.config.keep_checkpoints,
                                                  self.progress.best.get("checkpoint"), SUFFIXES):
                    logger.info("--keep_checkpoints %d: removed %s", self.config.keep_checkpoints, old)
        self.dist.barrier()

    write_best_record = Trainer.write_best_record  # the bi-encoder's rule: best_checkpoint.json from progress.best

    # ----- validation -----
    def selection_rule(self) -> str:
        if self.dev is None:
            return "no --dev_file: no validation, no best record"
        within = f"; every {self.config.eval_every_steps} steps a point for the log and plot only" \
            if self.config.eval_every_steps else ""
        return (f"best checkpoint: highest dev {BEST_METRIC} (reranking each of {len(self.dev.questions)} questions' "
                f"positives + listed negatives, at most {self.config.dev_candidates}), at every epoch end{within}")

    @torch.no_grad()
    def score(self, questions: list[str], passages: list[str]) -> list[float]:
        """Logits of pairs, in batches of --dev_batch_size, through step 4's scoring path (dpr.encode)."""
        was_training = self.model.training
        try:
            return score_cross_encoder(self.ce, questions, passages, self.config.dev_batch_size, self.device,
                                       self.amp_dtype).tolist()
        finally:
            self.model.train(was_training)

    def validate_mrr(self) -> dict:
        """Reranked MRR@10 (and top-1 accuracy) of the dev candidates."""
        dev = self.dev
        questions = [q for q, ps in zip(dev.questions, dev.passages) for _ in ps]
        scores = self.score(questions, [p for ps in dev.passages for p in ps])
        ranks, s = [], 0
        for rel in dev.relevant:
            ranks.append(first_relevant_rank(scores[s : s + len(rel)], rel))
            s += len(rel)
        return {BEST_METRIC: mrr_at_k(ranks, 10), "accuracy": float(np.mean([r == 1 for r in ranks])),
                "questions": float(len(ranks)), "pairs": float(len(scores))}

    def validate(self, epoch: int, end_of_epoch: bool = True) -> None:
        """Dev MRR@10 into the log; at an epoch end progress.best (highest MRR@10 across the run;
        best_checkpoint.json follows once save() has written the checkpoint it names)."""
        if self.dev is None:
            return
        if self.dist.is_main:
            value = self.validate_mrr()
            p = self.progress
            p.log.append({"type": "validation", "epoch": epoch, "iteration": p.iteration, "step": p.global_step,
                          "end_of_epoch": end_of_epoch, "metric": BEST_METRIC, **value})
            logger.info("validation epoch %d step %d%s: %s", epoch, p.global_step,
                        "" if end_of_epoch else " (within the epoch: log and plot only)",
                        {k: round(v, 4) for k, v in value.items()})
            if end_of_epoch and (p.best.get("metric") != BEST_METRIC or value[BEST_METRIC] > p.best["value"]):
                name = ckpt.checkpoint_path(self.output_dir, epoch, p.iteration, self.config.checkpoint_file_name)
                p.best = {"metric": BEST_METRIC, "value": value[BEST_METRIC], "checkpoint": str(name),
                          "reranker": str(model_dir(name)), "epoch": epoch, "run_id": p.run_id}
                logger.info("new best validation %s %.4f at %s (recorded once it is saved)", BEST_METRIC,
                            value[BEST_METRIC], name)
        if self.dist.world_size > 1:
            box = [self.progress.best, self.progress.log]
            dist.broadcast_object_list(box, src=0)
            self.progress.best, self.progress.log = box

    def _write_log(self) -> None:
        with atomic_write(self.output_dir / LOG_FILE) as f:
            for rec in self.progress.log:
                f.write(json.dumps(rec) + "\n")
