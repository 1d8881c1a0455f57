"""Checkpoints: `dpr_biencoder.{epoch}.{iter}` (training state, torch.load(weights_only=True)-safe) plus the two
encoders beside it as standard HF directories (`.question_encoder/`, `.passage_encoder/`); the reranker's
`dpr_reranker.{epoch}.{iter}` has one model directory (`.reranker/`). Which directories make a set complete is the
`suffixes` argument (the bi-encoder's two by default). Everything is written under a temporary name and renamed; the
state file is written last, so its presence means the set is complete.
"""
from __future__ import annotations

import contextlib
import glob
import logging
import os
import random
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from dpr.models.encoder import Encoder
from dpr.models.loading import P_SUFFIX, Q_SUFFIX
from dpr.models.source import encoder_dirs
from dpr.utils.io import InputError, atomic_dir, publish_then_mark, remove_stale_temps

PREFIX = "dpr_biencoder"
TOWER_SUFFIXES = (Q_SUFFIX, P_SUFFIX)
RERANKER_PREFIX, RERANKER_SUFFIX = "dpr_reranker", ".reranker"
RERANKER_SUFFIXES = (RERANKER_SUFFIX,)
logger = logging.getLogger(__name__)


def _name_re(prefix: str) -> re.Pattern:
    return re.compile(rf"^{re.escape(prefix)}\.(\d+)\.(\d+)$")


def checkpoint_path(output_dir: str | os.PathLike, epoch: int, iteration: int, prefix: str = PREFIX) -> Path:
    return Path(output_dir) / f"{prefix}.{epoch}.{iteration}"


@contextlib.contextmanager
def _quiet_hf() -> Iterator[None]:
    """No 'Writing model shards' progress bar from save_pretrained inside our own progress output."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _save_dir_atomic(encoder: Encoder, tokenizer: PreTrainedTokenizerBase, target: Path,
                     max_length: int | None = None) -> None:
    with atomic_dir(target) as tmp, _quiet_hf():
        encoder.save_pretrained(tmp, tokenizer, max_length)


def save_checkpoint(path: Path, q_encoder: Encoder, p_encoder: Encoder, tokenizer: PreTrainedTokenizerBase,
                    state: dict, q_max_length: int | None = None, p_max_length: int | None = None) -> None:
    """Write both encoder directories (also when they share weights), then the state file.

    The max lengths (training's) go into each directory's sentence-transformers config; a shared tower encodes
    passages too, so both of its directories get the passage length.
    """
    if q_encoder is p_encoder:
        q_max_length = p_max_length
    save_checkpoint_dirs(path, {Q_SUFFIX: lambda t: _save_dir_atomic(q_encoder, tokenizer, t, q_max_length),
                                P_SUFFIX: lambda t: _save_dir_atomic(p_encoder, tokenizer, t, p_max_length)}, state)


def save_checkpoint_dirs(path: Path, writers: dict[str, Callable[[Path], None]], state: dict) -> None:
    """Each model directory PATH+SUFFIX written (atomically) by its writer, then the state file that vouches for
    them all (temp files of a run killed while writing this checkpoint are removed first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for target in [Path(str(path) + s) for s in writers] + [path]:
        remove_stale_temps(target)
    with publish_then_mark(path, lambda f: torch.save(state, f), "wb"):  # the state file last: the set is complete
        for suffix, write in writers.items():
            with _quiet_hf():
                write(Path(str(path) + suffix))


def load_state(path: str | os.PathLike) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a file that is not a checkpoint
        raise InputError(path, f"not a training checkpoint: {e}") from None
    if not isinstance(state, dict) or "epoch" not in state:
        raise InputError(path, "not a training checkpoint written by train_dense_encoder.py or train_reranker.py")
    return state


def is_training_checkpoint(path: str | os.PathLike) -> bool:
    """A file named like PREFIX.E.I (any prefix): a training-state file rather than an encoder directory."""
    return Path(path).is_file() and re.match(r"^.+\.\d+\.\d+$", Path(path).name) is not None


def complete_checkpoints(output_dir: str | os.PathLike, prefix: str = PREFIX,
                         suffixes: tuple[str, ...] = TOWER_SUFFIXES) -> list[Path]:
    """The complete checkpoints in `output_dir` (state file and every model directory of `suffixes`), oldest first
    (by epoch, then iteration)."""
    found = []
    pattern = _name_re(prefix)
    for p in Path(output_dir).glob(f"{prefix}.*"):
        m = pattern.match(p.name)
        if m and _complete(p, suffixes):
            found.append(((int(m.group(1)), int(m.group(2))), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | os.PathLike, prefix: str = PREFIX,
                      suffixes: tuple[str, ...] = TOWER_SUFFIXES) -> Path | None:
    """The most advanced complete checkpoint in `output_dir` (by epoch, then iteration), or None."""
    found = complete_checkpoints(output_dir, prefix, suffixes)
    return found[-1] if found else None


def rng_state() -> dict:
    """Every RNG this process uses, as plain tensors/lists (weights_only-loadable): CPU, numpy, python, and the CUDA
    generator of this process's own device only (other visible devices are other ranks' business)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    out = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available():
        out["cuda_device"] = torch.cuda.get_rng_state(torch.cuda.current_device())
    return out


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if not torch.cuda.is_available():
        return
    device = torch.cuda.current_device()
    if "cuda_device" in state:
        torch.cuda.set_rng_state(state["cuda_device"], device)
    elif "cuda" in state:  # older checkpoints: every visible device's state; take this device's if it was saved
        saved = state["cuda"]
        if device < len(saved):
            torch.cuda.set_rng_state(saved[device], device)
        else:
            logger.warning("the checkpoint's CUDA RNG states cover %d devices, this process uses device %d: CUDA RNG "
                           "not restored", len(saved), device)


BEST_FILE = "best_checkpoint.json"
_warned_no_run_id: set[str] = set()


def new_run_id() -> str:
    """A fresh run's id: UTC start time (readable, sortable) plus random hex (unique)."""
    import time
    import uuid

    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def warn_no_run_id(directory: str | os.PathLike) -> None:
    """One warning per directory: its checkpoints were written before run ids existed and are read as before."""
    key = str(directory)
    if key not in _warned_no_run_id:
        _warned_no_run_id.add(key)
        logger.warning("%s: checkpoints written before run ids existed; read as before (which run wrote which file "
                       "cannot be checked)", key)


def checkpoint_run_id(path: str | os.PathLike) -> str | None:
    """The run id stamped into a training-state file (None: written before run ids existed). Memory-mapped, so a
    multi-GB state with optimizer moments is not read."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # torch raises several types for a file that is not a checkpoint
        raise InputError(path, f"not a training checkpoint: {e}") from None
    run_id = state.get("run_id") if isinstance(state, dict) else None
    return str(run_id) if run_id else None


def run_files(output_dir: str | os.PathLike, prefix: str = PREFIX,
              suffixes: tuple[str, ...] = TOWER_SUFFIXES) -> list[Path]:
    """Everything of a training run in `output_dir`: PREFIX.E.I state files, their model directories (also
    incomplete ones) and the best record."""
    out = Path(output_dir)
    pattern = re.compile(rf"^{re.escape(prefix)}\.\d+\.\d+({'|'.join(map(re.escape, suffixes))})?$")
    found = sorted(p for p in out.glob(f"{prefix}.*") if pattern.match(p.name)) if out.is_dir() else []
    return found + ([out / BEST_FILE] if (out / BEST_FILE).is_file() else [])


def save_temps(output_dir: str | os.PathLike, prefix: str = PREFIX) -> list[Path]:
    """What killed checkpoint saves left in `output_dir`: the `.PREFIX.E.I*.tmp*` temp files and model directories
    (a tower's can be GBs; no complete checkpoint ever reads them)."""
    out = Path(output_dir)
    return sorted(out.glob(f".{glob.escape(prefix)}.*.tmp*")) if out.is_dir() else []


def claim_output_dir(output_dir: str | os.PathLike, prefix: str, overwrite: bool,
                     suffixes: tuple[str, ...] = TOWER_SUFFIXES) -> list[Path]:
    """A fresh run's check of its directory: another run's checkpoints or best record there are refused (InputError)
    unless `overwrite`. Returns what the run is to delete (those files, and killed saves' temps) once everything it
    needs has loaded (remove_run_files); nothing is deleted here."""
    found = run_files(output_dir, prefix, suffixes)
    if found and not overwrite:
        raise InputError(output_dir, f"holds another run's checkpoints ({found[0].name} and {len(found) - 1} more): "
                                     f"continue that run with --resume, choose another --output_dir, or pass "
                                     f"--overwrite_output_dir to delete them")
    return found + save_temps(output_dir, prefix)


def check_not_removed(source: str | os.PathLike, removed: list[Path], why: str) -> None:
    """A starting model must not lie in the files a run is to delete (`removed`): InputError naming it and `why`."""
    reads = [Path(source), *map(Path, encoder_dirs(source) or ())]
    gone = {p.resolve() for p in removed}
    for path in (p.resolve() for p in reads if p.exists()):
        hit = next((g for g in gone if g == path or g in path.parents), None)
        if hit is not None:
            raise InputError(source, f"the starting model is among the files this run deletes ({hit.name}; {why}): "
                                     f"copy it out of {hit.parent} first, or choose another --output_dir")


def remove_run_files(found: list[Path], output_dir: str | os.PathLike, why: str = "--overwrite_output_dir") -> None:
    """Delete a run's files (state files first: no half set reads as complete), logging `why`."""
    for p in sorted(found, key=lambda q: q.is_dir()):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    logger.warning("%s: removed %d files and directories from %s", why, len(found), output_dir)


def _complete(path: Path, suffixes: tuple[str, ...] = TOWER_SUFFIXES) -> bool:
    return path.is_file() and all(Path(str(path) + s).is_dir() for s in suffixes)


def remove_checkpoint(path: Path, suffixes: tuple[str, ...] = TOWER_SUFFIXES) -> None:
    """Delete one checkpoint set: the state file first (the set then no longer reads as complete), then its model
    directories."""
    path.unlink(missing_ok=True)
    for suffix in suffixes:
        shutil.rmtree(Path(str(path) + suffix), ignore_errors=True)


def prune_checkpoints(output_dir: str | os.PathLike, prefix: str, run_id: str, keep: int,
                      protect: str | os.PathLike | None = None,
                      suffixes: tuple[str, ...] = TOWER_SUFFIXES) -> list[Path]:
    """Retention: of this run's complete checkpoints keep the newest `keep` and `protect` (its best); delete the rest.
    Checkpoints of any other run (or without a run id) are never touched. Returns what was deleted."""
    if keep <= 0:
        return []
    mine = [p for p in complete_checkpoints(output_dir, prefix, suffixes) if checkpoint_run_id(p) == run_id]
    keep_names = {p.name for p in mine[-keep:]} | ({Path(str(protect)).name} if protect else set())
    removed = [p for p in mine if p.name not in keep_names]
    for p in removed:
        remove_checkpoint(p, suffixes)
    return removed


def pick_checkpoint(output_dir: str | os.PathLike, prefix: str = PREFIX,
                    suffixes: tuple[str, ...] = TOWER_SUFFIXES) -> tuple[Path, str]:
    """The checkpoint a later step should use from a training output dir: the best validated one (best_checkpoint.json)
    when it is still complete and the record, that checkpoint and the newest checkpoint carry the same run id, else
    the newest complete one. Records and checkpoints written before run ids existed are used as before (one
    warning). Returns (path, why)."""
    out = Path(output_dir)
    if not out.is_dir():
        raise InputError(out, "not a directory (no training output here)")
    latest = latest_checkpoint(out, prefix, suffixes)
    best_file = out / BEST_FILE
    why_not_best = ""
    if best_file.is_file():
        import json

        try:
            best = json.loads(best_file.read_text(encoding="utf-8"))
            name = Path(str(best["checkpoint"])).name
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(best_file, f"unreadable best-checkpoint record: {e}") from None
        path = out / name  # the record's directory may have moved with the output dir; the name is what counts
        if _complete(path, suffixes):
            record_id, path_id = best.get("run_id"), checkpoint_run_id(path)
            latest_id = checkpoint_run_id(latest) if latest is not None else path_id
            if record_id is None or path_id is None:
                warn_no_run_id(out)
                return path, f"best validation {best.get('metric')} {best.get('value')}"
            if record_id == path_id == latest_id:
                return path, f"best validation {best.get('metric')} {best.get('value')}"
            why_not_best = f"; {BEST_FILE} belongs to another run ({record_id}), not used"
            logger.warning("%s: the best record names run %s, %s is of run %s and the newest checkpoint of run %s: "
                           "the record is not used", best_file, record_id, name, path_id, latest_id)
    if latest is None:
        raise InputError(out, f"no complete {prefix}.EPOCH.ITER checkpoint in this directory")
    return latest, "newest" + why_not_best


def _main(argv: list[str]) -> int:
    """`python -m dpr.training.checkpoint OUTPUT_DIR [--prefix P] [--reranker] [--hint TEXT]`: print the checkpoint
    that pick_checkpoint chooses (the shell scripts' default model; with --reranker, a train_reranker.py output dir's
    chosen reranker directory); on failure one `error:` line ending with TEXT."""
    import argparse
    import sys

    from dpr.utils.cli import run_script

    parser = argparse.ArgumentParser(prog="python -m dpr.training.checkpoint", description=_main.__doc__)
    parser.add_argument("output_dir")
    parser.add_argument("--prefix", default=None, help=f"Default: {PREFIX} ({RERANKER_PREFIX} with --reranker).")
    parser.add_argument("--reranker", action="store_true", help="A train_reranker.py output dir: print the chosen "
                                                                "checkpoint's reranker directory.")
    parser.add_argument("--hint", default="", help="Appended to the error line (e.g. which variable to set).")
    args = parser.parse_args(argv)

    def show() -> None:
        if args.reranker:
            path, why = pick_checkpoint(args.output_dir, args.prefix or RERANKER_PREFIX, RERANKER_SUFFIXES)
            path = Path(str(path) + RERANKER_SUFFIX)
        else:
            path, why = pick_checkpoint(args.output_dir, args.prefix or PREFIX)
        print(f"using {path} ({why})", file=sys.stderr)
        print(path)

    return run_script(show, hint=args.hint)


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
