"""Trainer pieces: the LR schedule, the CUDA RNG state of resume, the process-group timeout, and the typed boundary."""
from __future__ import annotations

import ast
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from dpr.training import checkpoint as ckpt
from dpr.training.trainer import linear_warmup_decay

ROOT = Path(__file__).resolve().parents[2]


def test_warmup_matches_dpr_then_decays_to_zero():
    warmup, total = 4, 10
    got = [linear_warmup_decay(s, warmup, total) for s in range(total + 2)]
    assert got[:4] == [0.0, 0.25, 0.5, 0.75]  # DPR: step / warmup (the first step has lr 0)
    assert got[4] == 1.0
    assert got[4:11] == pytest.approx([(total - s) / (total - warmup) for s in range(4, 11)])
    assert got[10] == 0.0 and got[11] == 0.0
    assert [linear_warmup_decay(s, 0, 4) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]  # no warmup


class FakeCuda:
    """A stand-in for torch.cuda's RNG functions on a machine with `count` visible devices."""

    def __init__(self, count: int, current: int):
        self.count, self.current = count, current
        self.states = {d: torch.tensor([d], dtype=torch.uint8) for d in range(count)}

    def _check(self, device) -> int:
        d = int(getattr(device, "index", device) if device is not None else self.current)
        if not 0 <= d < self.count:
            raise IndexError(f"device {d} of {self.count}")
        return d

    def install(self, monkeypatch) -> None:
        c = torch.cuda
        monkeypatch.setattr(c, "is_available", lambda: True)
        monkeypatch.setattr(c, "device_count", lambda: self.count)
        monkeypatch.setattr(c, "current_device", lambda: self.current)
        monkeypatch.setattr(c, "get_rng_state", lambda device="cuda": self.states[self._check(device)].clone())
        monkeypatch.setattr(c, "set_rng_state", lambda s, device="cuda": self.states.__setitem__(self._check(device), s))
        monkeypatch.setattr(c, "get_rng_state_all", lambda: [self.states[d].clone() for d in range(self.count)])

        def set_all(states):
            for d, s in enumerate(states):
                self.states[self._check(d)] = s

        monkeypatch.setattr(c, "set_rng_state_all", set_all)


def test_resume_on_fewer_visible_devices_restores_this_process_device(monkeypatch):
    """Defect 5: saved by the rank on device 3 of an 8-GPU box, resumed with CUDA_VISIBLE_DEVICES=3 (one device,
    index 0): the state of the saving process's own device lands on this process's device; no IndexError."""
    box = FakeCuda(8, current=3)
    box.install(monkeypatch)
    saved = ckpt.rng_state()
    one = FakeCuda(1, current=0)
    one.install(monkeypatch)
    ckpt.set_rng_state(saved)
    assert one.states[0].tolist() == [3]


def test_old_checkpoint_with_every_device_state_still_resumes(monkeypatch):
    box = FakeCuda(8, current=0)
    box.install(monkeypatch)
    state = ckpt.rng_state()
    state.pop("cuda_device", None)
    state["cuda"] = [torch.tensor([d + 10], dtype=torch.uint8) for d in range(8)]  # the old layout
    one = FakeCuda(1, current=0)
    one.install(monkeypatch)
    ckpt.set_rng_state(state)
    assert one.states[0].tolist() == [10]


def test_process_group_timeout_is_the_flag(monkeypatch):
    import train_dense_encoder as tde

    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(tde.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(tde.dist, "init_process_group", lambda backend, timeout: seen.update(b=backend, t=timeout))
    monkeypatch.setattr(tde.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(tde.dist, "get_world_size", lambda: 2)
    args = tde.build_parser().parse_args(["--train_file", "t", "--output_dir", "o"])
    info, device = tde.init_distributed(args.dist_timeout_minutes)
    assert seen == {"b": "gloo", "t": timedelta(minutes=30)} and info.rank == 1 and device.type == "cpu"
    args = tde.build_parser().parse_args(["--train_file", "t", "--output_dir", "o", "--dist_timeout_minutes", "5"])
    tde.init_distributed(args.dist_timeout_minutes)
    assert seen["t"] == timedelta(minutes=5)


def test_nothing_under_dpr_takes_an_argparse_namespace():
    """The typed boundary: scripts parse flags and build frozen configs; the library never sees argparse."""
    offenders = []
    for path in sorted((ROOT / "dpr").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "Namespace":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            elif isinstance(node, ast.Name) and node.id == "Namespace":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            elif isinstance(node, ast.ImportFrom) and node.module == "argparse" and any(
                    a.name == "Namespace" for a in node.names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "Namespace" in node.value \
                    and "argparse" in node.value:  # string annotations
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
