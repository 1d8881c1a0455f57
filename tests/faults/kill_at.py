"""`python tests/faults/kill_at.py POINT ARGS...`: train_dense_encoder.py with ARGS, killed with SIGKILL by itself at
one point no stderr line marks exactly (polling could miss it):
  before_first_save  the first checkpoint's save is called (after its validation), nothing of it written yet;
  inside_first_save  the first checkpoint's question tower is published and its passage tower is written under its
                     temp name, not renamed; the state file is not written."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import train_dense_encoder  # noqa: E402
from dpr.training import checkpoint as ckpt  # noqa: E402
from dpr.utils.cli import run_script  # noqa: E402
from dpr.utils.io import atomic_dir  # noqa: E402


def _die(*_args, **_kwargs) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _towers_killed_in_the_second():
    towers: list[Path] = []

    def save(encoder, tokenizer, target: Path, max_length: int | None = None) -> None:
        with atomic_dir(target) as tmp:
            encoder.save_pretrained(tmp, tokenizer, max_length)
            if towers:
                _die()
            towers.append(target)

    return save


if __name__ == "__main__":
    point, args = sys.argv[1], sys.argv[2:]
    if point == "before_first_save":
        ckpt.save_checkpoint = _die
    elif point == "inside_first_save":
        ckpt._save_dir_atomic = _towers_killed_in_the_second()
    else:
        sys.exit(f"unknown point {point}")
    sys.exit(run_script(lambda: train_dense_encoder.main(args)))
