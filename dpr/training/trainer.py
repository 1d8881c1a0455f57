"""The training loop: AdamW with linear warmup/decay, optional gradient cache, mixed precision, data parallelism over
torch.distributed ranks, per-epoch validation, checkpoints with exact resume, a JSON-lines log and a plot."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from dpr.encode import encode_texts
from dpr.eval.average_rank import average_rank
from dpr.models.encoder import Encoder
from dpr.models.tokens import model_mask
from dpr.training import checkpoint as ckpt
from dpr.training.config import TrainConfig
from dpr.training.data import (
    BatchBuilder,
    BiEncoderData,
    EpochBatches,
    average_rank_pool,
    epoch_batches,
    unpack_chunks,
)
from dpr.training.grad_cache import cached_step, full_step, read_together
from dpr.training.loss import biencoder_nll, global_nll
from dpr.training.plotting import plot_training_curves
from dpr.utils.device_defaults import ModelShape
from dpr.utils.io import atomic_write, remove_stale_temps, write_json
from dpr.utils.precision import autocast, scale_tensor

logger = logging.getLogger(__name__)
LOG_FILE = "train_log.jsonl"
PLOT_FILE = "training_curves.png"
BEST_FILE = ckpt.BEST_FILE


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


@dataclass
class Progress:
    """Everything besides weights/optimizer that an exact resume needs."""

    epoch: int = 0
    iteration: int = 0  # global batches done in `epoch`
    global_step: int = 0
    skipped_steps: int = 0
    masked_negatives: int = 0  # false-negative score entries masked so far
    best: dict = field(default_factory=dict)  # {"metric", "value", "checkpoint", "epoch", "run_id"}
    log: list = field(default_factory=list)
    run_id: str | None = None  # stamped into every checkpoint and the best record; kept across resumes


def unique_parameters(*modules: nn.Module) -> list[nn.Parameter]:
    """Trainable parameters of all modules in a fixed order, each once (a shared encoder appears once)."""
    seen, out = set(), []
    for m in modules:
        for param in m.parameters():
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                out.append(param)
    return out


def build_optimizer(modules: list[nn.Module], lr: float, weight_decay: float, eps: float) -> torch.optim.AdamW:
    """AdamW; biases and LayerNorm weights get no weight decay."""
    decay, no_decay, seen = [], [], set()
    for m in modules:
        for name, param in m.named_parameters():
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            (no_decay if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # the fused kernel: on CPU the default per-tensor loop is many times slower for 100M+ parameters
        return torch.optim.AdamW(groups, lr=lr, eps=eps, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr, eps=eps)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """`optimizer.load_state_dict(state)` keeping this optimizer's kernel: each group's `fused` flag is put back (the
    saved one may be None: a state written before fused AdamW or by its fallback; GradScaler would then hand
    `found_inf` to the plain loop, an AssertionError) and each `step` is moved to its parameter's device as float32,
    where a fused kernel reads it (load_state_dict placed it by the saved flag)."""
    fused = [g.get("fused") for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, flag in zip(optimizer.param_groups, fused):
        group["fused"] = flag
        if not flag:
            continue
        for param in group["params"]:
            s = optimizer.state.get(param, {})
            if torch.is_tensor(s.get("step")):
                s["step"] = s["step"].to(device=param.device, dtype=torch.float32)


def apply_update(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, params: list[nn.Parameter],
                 max_grad_norm: float, loss: torch.Tensor | float, correct: torch.Tensor | int
                 ) -> tuple[float, int, bool, float]:
    """Unscale, clip at `max_grad_norm` (<= 0: no clipping), step unless the gradients are not finite, zero them.
    Returns (loss, correct, skipped, grad norm), read from the device together in one wait (with the fused AdamW
    of `build_optimizer`, GradScaler's step and update do not wait). The trainer's update; the GPU benches call it."""
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else float("inf"))
    if scaler.is_enabled():
        before = scale_tensor(scaler).clone()
        scaler.step(optimizer)
        scaler.update()
        loss, correct, norm, before, after = read_together(loss, correct, norm, before, scale_tensor(scaler))
        skipped = after < before
    else:
        loss, correct, norm = read_together(loss, correct, norm)
        skipped = not math.isfinite(norm)
        if not skipped:
            optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss, int(correct), skipped, norm


def shared_run_id(world_size: int) -> str:
    """A fresh run id, the same on every rank (rank 0's)."""
    box = [ckpt.new_run_id()]
    if world_size > 1:
        dist.broadcast_object_list(box, src=0)
    return box[0]


def rank_batches(n: int, batch_size: int, seed: int, epoch: int, world_size: int) -> list[np.ndarray]:
    """The epoch's global batches of question indices, less a last one too small to give every rank a question."""
    batches = epoch_batches(n, batch_size, seed, epoch)
    if len(batches[-1]) < world_size:
        batches = batches[:-1]
    return batches


def linear_warmup_decay(step: int, warmup: int, total: int) -> float:
    """LR multiplier of DPR's schedule: step / warmup during warmup (0 at step 0), then linear decay to 0 at
    `total`."""
    if step < warmup:
        return step / warmup
    return max(0.0, (total - step) / max(1.0, total - warmup))


def sync_gradients(params: list[nn.Parameter]) -> None:
    """Sum gradients over ranks (each rank holds the global loss's gradient w.r.t. its own representations)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    grads = [param.grad if param.grad is not None else torch.zeros_like(param) for param in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for param, g in zip(params, grads):
        n = g.numel()
        param.grad = flat[offset : offset + n].view_as(param)
        offset += n


def enable_gradient_checkpointing(encoder: Encoder) -> None:
    """Recompute activations in backward (non-reentrant, which also runs cleanly under the cache's no-grad pass)."""
    model = encoder.model
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def set_attention_dropout(encoder: Encoder, p: float) -> int:
    """Attention-probability dropout of a BERT-family backbone set to `p`, everywhere the supported transformers
    versions read it: the self-attention's Dropout module (eager attention in 4.x; the SDPA path in 5.x reads its
    `.p`), the `dropout_prob` attribute that 4.x's BertSdpaSelfAttention passes to SDPA instead, and the config (so a
    saved checkpoint says what it was trained with). At 0, torch runs its fused attention kernel in training too
    instead of the composite one that any attention dropout forces (bench/bench_bf16_step.py --variants measures the
    difference). Returns the number of layers changed; ValueError for a backbone without BERT-style attention
    dropout. `check_attention_dropout_off` proves the effect."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"attention dropout must be in [0, 1), not {p}")
    model = encoder.model
    layers = [m for name, m in model.named_modules()
              if name.endswith("attention.self") and isinstance(getattr(m, "dropout", None), torch.nn.Dropout)]
    if not layers or not hasattr(model.config, "attention_probs_dropout_prob"):
        raise ValueError(f"{type(model).__name__} has no BERT-style attention dropout (attention.self.dropout and "
                         f"config.attention_probs_dropout_prob); --attention_dropout cannot be applied")
    for m in layers:
        m.dropout.p = p
        if hasattr(m, "dropout_prob"):  # transformers 4.x BertSdpaSelfAttention: SDPA's dropout_p comes from here
            m.dropout_prob = p
    model.config.attention_probs_dropout_prob = p
    return len(layers)


@torch.no_grad()
def check_attention_dropout_off(encoder: Encoder) -> None:
    """The effect of attention dropout 0, not only the attributes: with every Dropout module off, two forward passes
    in train mode must give the same vectors. ValueError when they differ (this transformers version applies
    attention dropout from somewhere set_attention_dropout does not set). Nothing is seeded (every dropout is off, so
    no seed is needed; a global seed would also reseed every CUDA generator, lazily, after the run's own seeding); RNG
    states and modes are restored."""
    model = encoder.model
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    saved_p, was_training = [m.p for m in dropouts], encoder.training
    device = next(model.parameters()).device
    n_tok = min(16, int(getattr(model.config, "max_position_embeddings", 16)) - 2)
    ids = torch.arange(n_tok, device=device).remainder(int(model.config.vocab_size)).repeat(2, 1)
    mask = torch.ones_like(ids)
    mask[1, n_tok // 2:] = 0  # a padded row too: the masked attention path
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        for m in dropouts:
            m.p = 0.0
        encoder.train()
        with torch.random.fork_rng(devices=devices):  # no seeding: torch.manual_seed would reseed every GPU too
            first = encoder(ids, mask)
            second = encoder(ids, mask)
    finally:
        for m, p in zip(dropouts, saved_p):
            m.p = p
        encoder.train(was_training)
    if not torch.allclose(first, second, rtol=1e-4, atol=1e-5):
        raise ValueError(f"attention dropout 0 was set but train-mode forward passes still differ with hidden dropout "
                         f"off (max difference {float((first - second).abs().max()):.3g}): this transformers version "
                         f"applies attention dropout from an attribute not set here; leave the flag out")


def _identity(x):
    return x


def _to_device(packed: dict[str, torch.Tensor], device: torch.device) -> list[dict]:
    """Unpack a side's chunks (sliced here, in the main process) onto `device`; a chunk without padding goes without
    its attention mask (tokens.model_mask: no device-side padding test in its forward passes)."""
    out = []
    for c in unpack_chunks(packed):
        mask = model_mask(c["attention_mask"])
        out.append({"input_ids": c["input_ids"].to(device, non_blocking=True),
                    "attention_mask": None if mask is None else mask.to(device, non_blocking=True)})
    return out


class Trainer:
    def __init__(self, config: TrainConfig, q_encoder: Encoder, p_encoder: Encoder,
                 tokenizer: PreTrainedTokenizerBase, train_data: BiEncoderData, dev_data: BiEncoderData | None,
                 device: torch.device, dist_info: DistInfo):
        # what the script built is resolved already (unchanged here); a hand-built config gets the device's values
        config = config.resolved(device, q_encoder.settings.normalize, ModelShape.of(q_encoder), dist_info.world_size)
        self.config, self.q_encoder, self.p_encoder, self.tokenizer = config, q_encoder, p_encoder, tokenizer
        self.train_data, self.dev_data, self.device, self.amp_dtype = train_data, dev_data, device, config.amp_dtype
        self.dist, self.temperature = dist_info, config.temperature
        c = config
        self.output_dir = Path(c.output_dir)
        self.params = unique_parameters(q_encoder, p_encoder)
        if dist_info.world_size > 1:  # identical replicas even if loading left some weights randomly initialised
            with torch.no_grad():
                for t in self.params + [b for m in (q_encoder, p_encoder) for b in m.buffers()]:
                    dist.broadcast(t.data, src=0)
        self.optimizer = build_optimizer([q_encoder, p_encoder], c.learning_rate, c.weight_decay, c.adam_eps)
        self.sampling = c.sampling
        self.batches_per_epoch = len(self._batches(0))
        total = self.batches_per_epoch * c.num_train_epochs
        self.total_steps = total
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, partial(linear_warmup_decay, warmup=c.warmup_steps, total=total))
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.progress = Progress(run_id=self._new_run_id())
        chunk_q, chunk_p = c.chunk_sizes(dist_info.world_size)
        self.builder = BatchBuilder(train_data, tokenizer, q_encoder.settings, self.sampling,
                                    c.q_sequence_length, c.p_sequence_length, chunk_q, chunk_p)

    # ----- state -----
    def _new_run_id(self) -> str:
        return shared_run_id(self.dist.world_size)

    @property
    def finished(self) -> bool:
        """Every epoch of the schedule is done (a resumed finished run has nothing to do)."""
        return self.progress.epoch >= self.config.num_train_epochs

    def _batches(self, epoch: int) -> list[np.ndarray]:
        return rank_batches(len(self.train_data), self.config.batch_size, self.config.seed, epoch,
                            self.dist.world_size)

    def state_dict(self) -> dict:
        rng = ckpt.rng_state()
        if self.dist.world_size > 1:
            all_rng: list = [None] * self.dist.world_size
            dist.all_gather_object(all_rng, rng)
        else:
            all_rng = [rng]
        prog = self.progress
        return {"epoch": prog.epoch, "iteration": prog.iteration, "global_step": prog.global_step,
                "skipped_steps": prog.skipped_steps, "masked_negatives": prog.masked_negatives, "best": prog.best, "log": prog.log,
                "run_id": prog.run_id, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": all_rng, "world_size": self.dist.world_size,
                "config": dataclasses.asdict(self.config)}

    def load_state_dict(self, state: dict) -> None:
        load_optimizer_state(self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.progress = Progress(epoch=state["epoch"], iteration=state["iteration"], global_step=state["global_step"],
                                 skipped_steps=state["skipped_steps"],
                                 masked_negatives=state.get("masked_negatives", 0), best=state["best"],
                                 log=list(state["log"]), run_id=state.get("run_id") or self.progress.run_id)
        if not state.get("run_id"):
            ckpt.warn_no_run_id(self.output_dir)
        if state.get("world_size") == self.dist.world_size:
            ckpt.set_rng_state(state["rng"][self.dist.rank])
        else:
            logger.warning("checkpoint was written by %s ranks, now %s: RNG streams are not restored (the run stays "
                           "valid but will not repeat the uninterrupted one exactly)", state.get("world_size"),
                           self.dist.world_size)
        if self.progress.iteration >= self.batches_per_epoch:
            self.progress.epoch, self.progress.iteration = self.progress.epoch + 1, 0
        saved = state.get("config") or state.get("args") or {}  # "args": checkpoints written before TrainConfig
        for key in ("batch_size", "seed", "hard_negatives", "other_negatives", "shuffle_positive_ctx", "grad_cache",
                    "learning_rate"):
            old = saved.get(key)
            if old != getattr(self.config, key):
                logger.warning("resuming with --%s %s (the checkpoint used %s)", key, getattr(self.config, key), old)

    # ----- one step -----
    def _amp(self):
        return autocast(self.device, self.amp_dtype)

    def train_step(self, batch: dict) -> tuple[float, int, bool, float]:
        """Forward/backward/update for one global batch; returns (loss, correct, skipped, grad norm), read from the
        device together in one wait (with fused AdamW, GradScaler's step and update do not wait)."""
        q_chunks = _to_device(batch["q"], self.device)
        p_chunks = _to_device(batch["p"], self.device)
        loss_fn = partial(global_nll, passages_per_question=self.sampling.passages_per_question,
                          temperature=self.temperature, q_sizes=batch["global_sizes"], masked=batch["masked"])
        step = cached_step if self.config.grad_cache else full_step
        loss, correct = step(self.q_encoder, self.p_encoder, q_chunks, p_chunks, loss_fn,
                             lambda loss: self.scaler.scale(loss).backward(), self._amp, batch["q_order"],
                             batch["p_order"], read=False)
        sync_gradients(self.params)
        loss, correct, skipped, norm = apply_update(self.optimizer, self.scaler, self.params, self.config.max_grad_norm,
                                                    loss, correct)
        if not skipped:  # a skipped step (inf/nan gradients) neither updates nor advances the schedule
            self.scheduler.step()
        return loss, correct, skipped, norm

    # ----- loop -----
    def _loader(self, epoch: int, start: int) -> torch.utils.data.DataLoader:
        ds = EpochBatches(self.builder, self._batches(epoch), epoch, start, self.dist.rank, self.dist.world_size)
        workers = self.config.num_workers
        return torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False, num_workers=workers,
                                           collate_fn=_identity, generator=torch.Generator().manual_seed(self.config.seed),
                                           prefetch_factor=2 if workers > 0 else None,
                                           pin_memory=self.device.type == "cuda")  # non-blocking copies in _to_device

    def fit(self) -> dict:
        a, prog = self.config, self.progress
        if self.dist.is_main:
            for name in (LOG_FILE, PLOT_FILE, BEST_FILE):  # temp files of a killed run
                remove_stale_temps(self.output_dir / name)
            self.write_best_record()  # a resumed run's record is the restored state's, whatever was on disk
        self.q_encoder.train()
        self.p_encoder.train()
        if self.dist.is_main:
            logger.info("training: %d questions, %d global batches/epoch of %d questions (%d per rank x %d ranks), "
                        "%d passages per question, %d epochs, %d steps", len(self.train_data), self.batches_per_epoch,
                        a.batch_size, a.per_rank_batch(self.dist.world_size), self.dist.world_size,
                        self.sampling.passages_per_question, a.num_train_epochs, self.total_steps)
            logger.info("run %s; %s", prog.run_id, self.selection_rule())
        bar = tqdm(total=self.total_steps, initial=prog.global_step, disable=not self.dist.is_main or not a.progress_bar,
                   unit="step", desc="train", dynamic_ncols=True)
        while prog.epoch < a.num_train_epochs:
            epoch = prog.epoch
            t0 = time.time()
            seen = 0
            for batch in self._loader(epoch, prog.iteration):
                loss, correct, skipped, norm = self.train_step(batch)
                prog.iteration += 1
                prog.global_step += 1
                prog.skipped_steps += int(skipped)
                n_q = sum(batch["global_sizes"])
                masked = int(batch["masked"].shape[0])
                prog.masked_negatives += masked
                seen += n_q
                lr = self.scheduler.get_last_lr()[0]
                rate = seen / max(time.time() - t0, 1e-9)
                prog.log.append({"type": "step", "epoch": epoch, "iteration": prog.iteration, "step": prog.global_step,
                              "loss": loss, "accuracy": correct / n_q, "lr": lr, "grad_norm": norm,
                              "skipped": bool(skipped), "masked_negatives": masked, "questions_per_s": rate})
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", qps=f"{rate:.1f}")
                if self.dist.is_main and (prog.global_step % a.log_batch_step == 0):
                    logger.info("epoch %d step %d/%d loss %.4f acc %.3f lr %.3e grad_norm %.3f skipped %d masked "
                                "false negatives %d (this step %d) %.1f q/s", epoch, prog.iteration,
                                self.batches_per_epoch, loss, correct / n_q, lr, norm, prog.skipped_steps,
                                prog.masked_negatives, masked, rate)
                    self._write_log()
                if a.save_every_steps and prog.iteration % a.save_every_steps == 0 and prog.iteration < self.batches_per_epoch:
                    self.save(epoch, prog.iteration)
                if a.eval_every_steps and prog.global_step % a.eval_every_steps == 0 and prog.iteration < self.batches_per_epoch:
                    self.validate(epoch, end_of_epoch=False)
            self.validate(epoch)
            self.save(epoch, prog.iteration)
            prog.epoch, prog.iteration = epoch + 1, 0
        bar.close()
        if self.dist.is_main:
            self._write_log()
            self.plot()
            logger.info("done: %d steps, %d skipped (inf/nan), %d false-negative scores masked; best %s",
                        prog.global_step, prog.skipped_steps, prog.masked_negatives, prog.best)
        return prog.best

    def save(self, epoch: int, iteration: int) -> None:
        path = ckpt.checkpoint_path(self.output_dir, epoch, iteration, self.config.checkpoint_file_name)
        saved_epoch, saved_iter = self.progress.epoch, self.progress.iteration
        self.progress.epoch, self.progress.iteration = epoch, iteration
        state = self.state_dict()
        self.progress.epoch, self.progress.iteration = saved_epoch, saved_iter
        if self.dist.is_main:
            ckpt.save_checkpoint(path, self.q_encoder, self.p_encoder, self.tokenizer, state,
                                 self.config.q_sequence_length, self.config.p_sequence_length)
            self.write_best_record()  # after the checkpoint it may name is complete
            self._write_log()
            logger.info("saved checkpoint %s", path)
            if self.config.keep_checkpoints:
                for old in ckpt.prune_checkpoints(self.output_dir, self.config.checkpoint_file_name,
                                                  self.progress.run_id, self.config.keep_checkpoints,
                                                  self.progress.best.get("checkpoint")):
                    logger.info("--keep_checkpoints %d: removed %s", self.config.keep_checkpoints, old)
        self.dist.barrier()

    def write_best_record(self) -> None:
        """best_checkpoint.json from progress.best (none: no record). Written only where every checkpoint that
        progress.best can name is complete (publish-then-mark: after each save, and when a run starts from a restored
        state, so a record written before a kill is never the one a resumed run leaves)."""
        path = self.output_dir / BEST_FILE
        if self.progress.best:
            write_json(path, self.progress.best)
        else:
            path.unlink(missing_ok=True)

    # ----- validation -----
    def selection_rule(self) -> str:
        """The log line that says how the best checkpoint is chosen."""
        if self.dev_data is None:
            return "no --dev_file: no validation, no best record"
        c = self.config
        extra = (f"; average rank also from epoch {c.val_av_rank_start_epoch} on (logged, not selecting)"
                 if c.best_metric == "nll" and c.val_av_rank_start_epoch < c.num_train_epochs else "")
        within = f"; every {c.eval_every_steps} steps a point for the log and plot only" if c.eval_every_steps else ""
        return f"best checkpoint: lowest dev {c.best_metric}, computed at every epoch end{extra}{within}"

    def validate(self, epoch: int, end_of_epoch: bool = True) -> None:
        """Dev metrics into the log. At an epoch end: every metric of config.validation_metrics, and progress.best
        (one metric, config.best_metric, across the whole run; best_checkpoint.json follows once save() has written
        the checkpoint it names). Within an epoch (--eval_every_steps): the best metric
        only, a point for the log and the plot, no checkpoint and no best record."""
        if self.dev_data is None:
            return
        if self.dist.is_main:
            c = self.config
            metrics = c.validation_metrics(epoch) if end_of_epoch else (c.best_metric,)
            name = ckpt.checkpoint_path(self.output_dir, epoch, self.progress.iteration, c.checkpoint_file_name)
            for metric in metrics:
                value = self.validate_average_rank() if metric == "average_rank" else self.validate_nll()
                self.progress.log.append({"type": "validation", "epoch": epoch, "iteration": self.progress.iteration,
                                          "step": self.progress.global_step, "end_of_epoch": end_of_epoch,
                                          "metric": metric, **value})
                logger.info("validation epoch %d step %d%s: %s", epoch, self.progress.global_step,
                            "" if end_of_epoch else " (within the epoch: log and plot only)",
                            {k: round(v, 4) for k, v in value.items()})
                if not end_of_epoch or metric != c.best_metric:
                    continue
                best = self.progress.best
                if best.get("metric") != metric or value[metric] < best["value"]:
                    self.progress.best = {"metric": metric, "value": value[metric], "checkpoint": str(name),
                                          "epoch": epoch, "run_id": self.progress.run_id}
                    logger.info("new best validation %s %.4f at %s", metric, value[metric], name)  # recorded by save
        if self.dist.world_size > 1:  # every rank keeps the same progress
            box = [self.progress.best, self.progress.log]
            dist.broadcast_object_list(box, src=0)
            self.progress.best, self.progress.log = box

    @torch.no_grad()
    def validate_nll(self) -> dict:
        """In-batch NLL (and top-1 accuracy) on the dev file, batches of --dev_batch_size, first negatives, with the
        same false-negative masking as training."""
        a = self.config
        sampling = a.dev_sampling
        builder = BatchBuilder(self.dev_data, self.tokenizer, self.q_encoder.settings, sampling, a.q_sequence_length,
                               a.p_sequence_length, a.dev_batch_size, a.dev_batch_size * sampling.passages_per_question)
        self.q_encoder.eval()
        self.p_encoder.eval()
        total_loss, total_correct, n = 0.0, 0, 0
        try:
            for idx in epoch_batches(len(self.dev_data), a.dev_batch_size, a.seed, 0, shuffle=False):
                batch = builder(idx, 0)
                loss_fn = partial(biencoder_nll, passages_per_question=sampling.passages_per_question,
                                  temperature=self.temperature, masked=batch["masked"])
                loss, correct = full_step(self.q_encoder, self.p_encoder, _to_device(batch["q"], self.device),
                                          _to_device(batch["p"], self.device), loss_fn, lambda loss: None,
                                          self._amp, batch["q_order"], batch["p_order"])
                total_loss += loss * len(idx)
                total_correct += correct
                n += len(idx)
        finally:
            self.q_encoder.train()
            self.p_encoder.train()
        return {"nll": total_loss / n, "accuracy": total_correct / n}

    def validate_average_rank(self) -> dict:
        """DPR's average rank: each of up to --val_av_rank_max_qs dev questions ranked in the pooled passages
        (de-duplicated by passage id or text; see dpr.eval.average_rank)."""
        a = self.config
        data = self.dev_data
        n_q = min(a.val_av_rank_max_qs, len(data))
        questions, pool, positive = average_rank_pool(data, n_q, a.val_av_rank_hard_neg, a.val_av_rank_other_neg)
        enc = partial(encode_texts, tokenizer=self.tokenizer, batch_size=a.val_av_rank_bsz, device=self.device,
                      amp_dtype=self.amp_dtype)
        q_vecs = enc(self.q_encoder, texts=questions, kind="query", max_length=a.q_sequence_length)
        p_vecs = enc(self.p_encoder, texts=pool, kind="passage", max_length=a.p_sequence_length)
        return {"average_rank": average_rank(q_vecs, p_vecs, np.asarray(positive)), "questions": float(n_q),
                "passages": float(len(pool))}

    # ----- outputs -----
    def _write_log(self) -> None:
        with atomic_write(self.output_dir / LOG_FILE) as f:
            for rec in self.progress.log:
                f.write(json.dumps(rec) + "\n")

    def plot(self) -> None:
        """Training loss (raw and smoothed), learning rate and validation points, as a PNG."""
        plot_training_curves(self.progress.log, self.output_dir / PLOT_FILE)
