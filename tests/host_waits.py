"""CPU stand-ins for what makes the host wait on a CUDA device: a counter of device-to-host reads in every frame, and
a deferred device-to-host copy for dpr.encode (a CPU copy is synchronous, so without it a read made before the wait
could not fail)."""
from __future__ import annotations

import sys

import torch

from dpr.encode import _BatchRunner


class HostWaits(torch.overrides.TorchFunctionMode):
    """Counts, in every frame (ours, torch's, transformers'), what waits for the device on CUDA: a tensor read
    (.item, .cpu, .tolist, bool(), float(), int()) and an event wait (`DeferredCopies`). `where` names each one's
    caller, file:function."""

    READS = {"cpu", "item", "tolist", "__bool__", "__float__", "__int__", "__index__"}
    active: HostWaits | None = None

    def __init__(self):
        super().__init__()
        self.where: list[str] = []

    @property
    def count(self) -> int:
        return len(self.where)

    def note(self, what: str) -> None:
        self.where.append(what)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.READS:
            frame = sys._getframe(1)
            self.note(f"{frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_code.co_name}:{name}")
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        HostWaits.active = self
        return super().__enter__()

    def __exit__(self, *exc):
        HostWaits.active = None
        return super().__exit__(*exc)


class _Event:
    """Stands in for the CUDA event recorded after a block's copy: the copy lands in the host buffer only when it is
    waited for (unless a fault is planted)."""

    def __init__(self, copies: DeferredCopies, block: int, land):
        self.copies, self.block, self.land = copies, block, land

    def synchronize(self) -> None:
        self.copies.log.append(("wait", self.block))
        if HostWaits.active is not None:
            HostWaits.active.note("encode.py:event.synchronize")
        if self.copies.plant != "no_wait":
            self.land()


class DeferredCopies:
    """Patches dpr.encode._BatchRunner on CPU so that a block's vectors reach the host only at its event's wait (as a
    non-blocking CUDA copy does) and logs ("forward", rows), ("copy", block), ("wait", block) in order.

    plant: "no_wait" (the copy never lands: a read without waiting sees zeroed rows), "stale" (every block shares one
    host buffer that lands at its first wait: later blocks read the first one's rows), "unordered" (rows are not put
    back in input order)."""

    def __init__(self, monkeypatch, plant: str | None = None):
        self.log: list[tuple[str, int]] = []
        self.plant = plant
        self.shared: torch.Tensor | None = None
        copies = self
        forward = _BatchRunner._forward
        wait = _BatchRunner.wait

        def logged_forward(runner, ids, mask):
            copies.log.append(("forward", len(ids)))
            return forward(runner, ids, mask)

        def to_host(runner, vectors):
            block = sum(1 for e in copies.log if e[0] == "copy")
            copies.log.append(("copy", block))
            if plant == "stale" and copies.shared is not None and copies.shared.shape == vectors.shape:
                return copies.shared, _Event(copies, block, lambda: None)
            host = torch.zeros_like(vectors)
            if plant == "stale":
                copies.shared = host
            return host, _Event(copies, block, lambda: host.copy_(vectors))

        def unordered_wait(runner, launched):
            out = wait(runner, launched)
            return out[launched.order]  # the rows in sorted order: input order not restored

        monkeypatch.setattr(_BatchRunner, "_forward", logged_forward)
        monkeypatch.setattr(_BatchRunner, "_to_host", to_host)
        if plant == "unordered":
            monkeypatch.setattr(_BatchRunner, "wait", unordered_wait)

    def events(self) -> list[tuple[str, int]]:
        """The log with forwards numbered by their block (the block whose copy follows them)."""
        out, block = [], 0
        for kind, n in self.log:
            if kind == "forward":
                out.append(("forward", block))
            else:
                out.append((kind, n))
                block += kind == "copy"
        return out
