"""Run by test_loader_fds.py: iterate the trainer's DataLoader (1 worker) under a low open-file limit."""
from __future__ import annotations

import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from dpr.models.loading import TowerOptions, load_towers  # noqa: E402
from dpr.training.config import TrainConfig  # noqa: E402
from dpr.training.data import BiEncoderData  # noqa: E402
from dpr.training.trainer import DistInfo, Trainer  # noqa: E402


def main(model_dir: str, train_file: str, out_dir: str, limit: int) -> None:
    towers = load_towers(TowerOptions(model_dir))
    config = TrainConfig(train_file=train_file, output_dir=out_dir, batch_size=24, hard_negatives=3,
                         other_negatives=2, grad_cache=True, q_chunk_size=1, ctx_chunk_size=1, num_workers=1,
                         q_sequence_length=16, p_sequence_length=16)
    trainer = Trainer(config, towers.question, towers.passage, towers.tokenizer, BiEncoderData(train_file), None,
                      torch.device("cpu"), DistInfo())
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    n = 0
    for batch in trainer._loader(0, 0):
        n += len(batch["p"]["shapes"]) if "p" in batch else len(batch["p_chunks"])
    print("chunks", n)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
