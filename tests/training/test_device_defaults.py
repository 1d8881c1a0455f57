"""Device-resolved defaults: CPU keeps the historical flag values, CUDA sizes from the card, explicit flags win, and
the .sh files pass the flags only when their variable is set."""
from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dpr.utils.device_defaults import DeviceDefaults, ModelShape, device_defaults, resolve
from train_dense_encoder import build_config, build_parser

ROOT = Path(__file__).resolve().parents[2]
BERT_BASE, E5_SMALL = ModelShape(768, 12, 12), ModelShape(384, 12, 12)
H200, V100 = 141 * 10**9, 32 * 2**30


def test_cpu_defaults_are_the_historical_flag_values():
    d = device_defaults("cpu", BERT_BASE, 32, 384, 1024, 5)
    assert d == DeviceDefaults(q_chunk_size=16, ctx_chunk_size=8, encode_batch=128, num_workers=2)


def test_cuda_defaults_grow_with_memory_and_stop_at_one_chunk():
    big = device_defaults("cuda", BERT_BASE, 32, 384, 1024, 5, memory_bytes=H200, cpu_count=16)
    small = device_defaults("cuda", BERT_BASE, 32, 384, 1024, 5, memory_bytes=V100, cpu_count=16)
    assert big.ctx_chunk_size > small.ctx_chunk_size >= 8 and big.q_chunk_size == 1024  # a whole side: one chunk
    for d in (big, small):
        for n in (d.q_chunk_size, d.ctx_chunk_size, d.encode_batch):
            assert n & (n - 1) == 0  # powers of two
    assert (big.ctx_chunk_size, big.encode_batch, big.num_workers) == (128, 1024, 8)
    e5 = device_defaults("cuda", E5_SMALL, 32, 128, 128, 2, memory_bytes=H200, cpu_count=16)
    assert (e5.q_chunk_size, e5.ctx_chunk_size) == (128, 256)  # the recipe's batch fits one chunk a side
    assert device_defaults("cuda", BERT_BASE, 32, 384, 64, 5, memory_bytes=H200, cpu_count=64,
                           local_ranks=8).num_workers == 4  # the cores are shared by the node's ranks


def test_resolve_fills_only_the_unset():
    d = DeviceDefaults(1, 2, 3, 4)
    assert resolve({"q_chunk_size": 512, "ctx_chunk_size": None}, d) == ({"q_chunk_size": 512, "ctx_chunk_size": 2},
                                                                         ["ctx_chunk_size"])
    with pytest.raises(KeyError):
        resolve({"batch_size": None}, d)


@pytest.fixture
def fake_h200(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *a: SimpleNamespace(total_memory=H200))
    monkeypatch.setattr(os, "cpu_count", lambda: 16)


def test_train_script_uses_the_device_defaults_and_the_reference_values_win(fake_h200):
    base = "--train_file t.json --output_dir o --batch_size 1024 --hard_negatives 4 --grad_cache --fp32"
    unset = build_config(build_parser().parse_args(shlex.split(base)), False, torch.device("cuda"), BERT_BASE)
    assert (unset.q_chunk_size, unset.ctx_chunk_size, unset.num_workers, unset.val_av_rank_bsz) == (1024, 128, 8, 1024)
    ref = build_parser().parse_args(shlex.split(base + " --q_chunk_size 512 --ctx_chunk_size 64 --num_workers 2 "
                                                       "--val_av_rank_bsz 128"))
    given = build_config(ref, False, torch.device("cuda"), BERT_BASE)
    assert (given.q_chunk_size, given.ctx_chunk_size, given.num_workers, given.val_av_rank_bsz) == (512, 64, 2, 128)
    cpu = build_config(build_parser().parse_args(shlex.split(base)), False, torch.device("cpu"), BERT_BASE)
    assert (cpu.q_chunk_size, cpu.ctx_chunk_size, cpu.num_workers, cpu.val_av_rank_bsz) == (16, 8, 2, 128)


def _recorded_flags(tmp_path: Path, script: str, env: dict) -> list[str]:
    """Run `script` with a stand-in python that records its arguments; returns them."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python").write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/calls\n')
    (bin_dir / "python").chmod(0o755)
    (tmp_path / "calls").unlink(missing_ok=True)
    full = {**{k: v for k, v in os.environ.items() if k not in ("GPUS", "CUDA_VISIBLE_DEVICES")},
            "PATH": f"{bin_dir}:{os.environ['PATH']}", **env}
    r = subprocess.run(["sh", script], cwd=ROOT, env=full, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return (tmp_path / "calls").read_text().split()


def test_sh_files_pass_the_device_sized_flags_only_when_set(tmp_path):
    """run_train.sh runs the reference's chunks (512 / 64) unless told Q_CHUNK / CTX_CHUNK=auto (then no flag: the
    device sizes them; dropout masks are drawn per chunk, so device-sized chunks could not repeat the reference)."""
    for name in ("t.json", "d.json", "p.tsv"):
        (tmp_path / name).write_text("[]")
    train = {"MODEL": "multilingual-e5-small", "TRAIN_FILE": str(tmp_path / "t.json"), "DEV_FILE": str(tmp_path / "d.json"),
             "OUTPUT_DIR": str(tmp_path / "o")}
    flags = _recorded_flags(tmp_path, "run_train.sh", train)
    assert " ".join(flags).count("--q_chunk_size 512 --ctx_chunk_size 64") == 1 and "--num_workers" not in flags
    assert build_parser().parse_args(flags[1:]).q_chunk_size == 512  # what the stand-in recorded parses as given
    flags = _recorded_flags(tmp_path, "run_train.sh", {**train, "Q_CHUNK": "auto", "CTX_CHUNK": "auto"})
    assert not {"--q_chunk_size", "--ctx_chunk_size", "--num_workers"} & set(flags)
    flags = _recorded_flags(tmp_path, "run_train.sh", {**train, "Q_CHUNK": "auto", "CTX_CHUNK": "32"})
    assert "--q_chunk_size" not in flags and " ".join(flags).count("--ctx_chunk_size 32") == 1
    flags = _recorded_flags(tmp_path, "run_train.sh", {**train, "Q_CHUNK": "8", "CTX_CHUNK": "4", "NUM_WORKERS": "3"})
    assert " ".join(flags).count("--q_chunk_size 8 --ctx_chunk_size 4 --num_workers 3") == 1
    gen = {"MODEL_FILE": "m", "CTX_FILE": str(tmp_path / "p.tsv"), "EMB_DIR": str(tmp_path / "emb"), "GPUS": "",
           "NUM_SHARDS": "1"}
    assert "--batch_size" not in _recorded_flags(tmp_path, "run_gen_emb.sh", gen)
    assert "--batch_size 512" in " ".join(_recorded_flags(tmp_path, "run_gen_emb.sh", {**gen, "BATCH_SIZE": "512"}))


def test_recipe_leaves_chunks_and_encoding_batch_to_the_gpu_and_keeps_the_cpu_values(tmp_path):
    """bench/recipe_cmrc_cpu.sh on a GPU passes no chunk / encoding-batch flags (the device's defaults); on CPU the
    measured 64 / 32 / 64 as before (a stand-in python records the calls and fakes the checkpoint)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {tmp_path}/calls\n'
        'if [ "$1" = train_dense_encoder.py ]; then\n'
        '  while [ $# -gt 0 ]; do [ "$1" = --output_dir ] && mkdir -p "$2/dpr_biencoder.0.1.question_encoder"; shift; done\n'
        "fi\n")
    (bin_dir / "python").chmod(0o755)
    data = tmp_path / "data"
    (data / "retrieval_train_data").mkdir(parents=True)
    for f in ("retrieval_train_data/dual_train.json", "passages.tsv", "dev.json"):
        (data / f).write_text("x\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "bm25_dev.metrics.json").write_text("{}")
    base = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DATA": str(data), "OUT": str(tmp_path / "out"),
            "HELDOUT_QS": "0"}
    for on_cuda, expect in (("1", False), ("0", True)):
        (tmp_path / "calls").unlink(missing_ok=True)
        r = subprocess.run(["bash", "bench/recipe_cmrc_cpu.sh"], cwd=ROOT, env={**base, "ON_CUDA": on_cuda},
                           capture_output=True, text=True)
        calls = (tmp_path / "calls").read_text()
        assert "train_dense_encoder.py" in calls, r.stderr[-2000:]
        train = next(c for c in calls.splitlines() if c.startswith("train_dense_encoder.py"))
        enc = next(c for c in calls.splitlines() if c.startswith("generate_dense_embeddings.py"))
        assert ("--q_chunk_size 64 --ctx_chunk_size 32" in train) is expect and ("--batch_size 64" in enc) is expect
        assert ("--q_chunk_size" in train) is expect and ("--batch_size" in enc) is expect
