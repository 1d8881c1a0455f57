"""Gradient caching: the gradient of a large-batch contrastive loss with the memory of one chunk.

Pass 1 encodes every chunk without a graph, recording the RNG state before each chunk. The loss and its backward
run on detached representations, which leaves d(loss)/d(representation) in their `.grad`. Pass 2 re-encodes each
chunk with a graph under its recorded RNG state (identical dropout masks) and backpropagates that cached gradient.
Parameter gradients are exactly those of one forward/backward over the whole batch: no loss rescaling anywhere.
Whatever `backward` does to the loss (e.g. GradScaler's scaling) reaches the second pass through the cached
gradients.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager

import torch
from torch import nn

Chunk = dict[str, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, "int | torch.Tensor"]]


def read_together(*values: float | int | torch.Tensor) -> list[float]:
    """Scalars (tensors on one device, or numbers) on the host in one device-to-host read."""
    tensors = [v.detach().reshape(()).float() for v in values if isinstance(v, torch.Tensor)]
    read = iter(torch.stack([t.to(tensors[0].device) for t in tensors]).tolist() if tensors else [])
    return [next(read) if isinstance(v, torch.Tensor) else float(v) for v in values]


def _result(loss: torch.Tensor, correct: int | torch.Tensor, read: bool
            ) -> tuple[float, int] | tuple[torch.Tensor, int | torch.Tensor]:
    """(loss, correct) read in one wait (`read`), or left on the device for the caller to read with more values."""
    if not read:
        return loss.detach(), correct
    value, n = read_together(loss, correct)
    return value, int(n)


class RngState:
    """The CPU RNG state (and the CUDA one for a CUDA device) at construction, replayable later."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Run the block from the recorded state; the RNG state outside the block is left untouched."""
        with torch.random.fork_rng(devices=[self.device] if self.cuda is not None else []):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


def _device_of(chunks: list[Chunk]) -> torch.device:
    return chunks[0]["input_ids"].device


def encode_no_grad(encoder: nn.Module, chunks: list[Chunk], amp: Callable[[], ContextManager]
                   ) -> tuple[torch.Tensor, list[RngState]]:
    """Pass 1: representations of all chunks (fp32, no graph) and the RNG state before each chunk."""
    reps, states = [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(RngState(_device_of(chunks)))
            with amp():
                reps.append(encoder(**chunk).float())
    return torch.cat(reps), states


def replay_backward(encoder: nn.Module, chunks: list[Chunk], states: list[RngState], grad: torch.Tensor,
                    amp: Callable[[], ContextManager]) -> None:
    """Pass 2: re-encode each chunk under its recorded RNG state and backpropagate its slice of `grad`."""
    start = 0
    for chunk, state in zip(chunks, states):
        n = chunk["input_ids"].shape[0]
        with state.replay():
            with amp():
                rep = encoder(**chunk).float()
            rep.backward(grad[start : start + n])
        start += n


def _on(order: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """A chunk order on the device, copied once and without blocking (from pinned memory the copy is asynchronous)."""
    return None if order is None else order.to(device, non_blocking=True)


def _unsort(reps: torch.Tensor, order: torch.Tensor | None) -> torch.Tensor:
    """Chunks may hold texts sorted by length (row k = text order[k]); return rows in batch order."""
    if order is None:
        return reps
    out = torch.empty_like(reps)
    out[order] = reps
    return out


def cached_step(q_encoder: nn.Module, p_encoder: nn.Module, q_chunks: list[Chunk], p_chunks: list[Chunk],
                loss_fn: LossFn, backward: Callable[[torch.Tensor], None], amp: Callable[[], ContextManager],
                q_order: torch.Tensor | None = None, p_order: torch.Tensor | None = None, read: bool = True
                ) -> tuple[float, int] | tuple[torch.Tensor, int | torch.Tensor]:
    """One cached forward/backward; parameter .grad accumulates exactly the full-batch gradient. Returns (loss, correct)
    read in one device-to-host wait, or (`read=False`) left on the device so the caller reads them with its own.

    `q_order`/`p_order`: when the chunks hold the texts in another order (sorted by length, so that each chunk pads
    little), row k of the concatenated chunks is text order[k] of the batch.
    """
    q_reps, q_states = encode_no_grad(q_encoder, q_chunks, amp)
    p_reps, p_states = encode_no_grad(p_encoder, p_chunks, amp)
    q_order, p_order = _on(q_order, q_reps.device), _on(p_order, p_reps.device)
    q = _unsort(q_reps, q_order).detach().requires_grad_()
    p = _unsort(p_reps, p_order).detach().requires_grad_()
    loss, correct = loss_fn(q, p)
    backward(loss)
    q_grad = q.grad if q_order is None else q.grad[q_order]
    p_grad = p.grad if p_order is None else p.grad[p_order]
    replay_backward(q_encoder, q_chunks, q_states, q_grad, amp)
    replay_backward(p_encoder, p_chunks, p_states, p_grad, amp)
    return _result(loss, correct, read)


def full_step(q_encoder: nn.Module, p_encoder: nn.Module, q_chunks: list[Chunk], p_chunks: list[Chunk],
              loss_fn: LossFn, backward: Callable[[torch.Tensor], None], amp: Callable[[], ContextManager],
              q_order: torch.Tensor | None = None, p_order: torch.Tensor | None = None, read: bool = True
              ) -> tuple[float, int] | tuple[torch.Tensor, int | torch.Tensor]:
    """The uncached reference: every chunk encoded with a graph (same RNG order as `cached_step`), one backward."""
    with amp():
        q_reps = torch.cat([q_encoder(**c).float() for c in q_chunks])
        p_reps = torch.cat([p_encoder(**c).float() for c in p_chunks])
        q = _unsort(q_reps, _on(q_order, q_reps.device))
        p = _unsort(p_reps, _on(p_order, p_reps.device))
    loss, correct = loss_fn(q, p)
    backward(loss)
    return _result(loss, correct, read)
