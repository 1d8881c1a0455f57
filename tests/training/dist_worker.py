"""Run by test_distributed.py under torchrun (gloo, CPU): one global batch split over the ranks, gradients summed
over ranks; rank 0 saves the gradients with and without the cache."""
from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from test_distributed import MASK, PPQ, TEMPERATURE, batch, flat_grads, towers  # noqa: E402

from dpr.training.data import chunked, split_for_rank  # noqa: E402
from dpr.training.grad_cache import cached_step, full_step  # noqa: E402
from dpr.training.loss import global_nll  # noqa: E402
from dpr.training.trainer import sync_gradients, unique_parameters  # noqa: E402


def main(model_dir: str, out: str) -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    rank, world = dist.get_rank(), dist.get_world_size()
    q_ids, p_ids = batch()
    n = len(q_ids)
    local = split_for_rank(np.arange(n), rank, world)
    sizes = [len(x) for x in np.array_split(np.arange(n), world)]
    q_local = [q_ids[i] for i in local]
    p_local = [p_ids[i * PPQ + k] for i in local for k in range(PPQ)]
    loss_fn = partial(global_nll, passages_per_question=PPQ, temperature=TEMPERATURE, q_sizes=sizes, masked=MASK)
    results = {}
    for name, step, qc, pc in (("cached", cached_step, 2, 3), ("uncached", full_step, len(q_local), len(p_local))):
        q_enc, p_enc = towers(model_dir)
        params = unique_parameters(q_enc, p_enc)
        step(q_enc, p_enc, chunked(q_local, qc, 0), chunked(p_local, pc, 0), loss_fn, lambda loss: loss.backward(),
             __import__("contextlib").nullcontext)
        sync_gradients(params)
        results[name] = flat_grads(q_enc, p_enc)
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
