"""kill -9 in the middle of each long step, then run it again: nothing half-written is taken for output, and the
re-run ends exactly where an uninterrupted run ends."""
from __future__ import annotations

import json
import logging
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import generate_dense_embeddings as gen
from dpr.data.formats import read_dpr_json, read_passages_tsv
from dpr.index.embeddings import load_shard, shard_paths
from dpr.models.encoder import Encoder
from dpr.training.checkpoint import latest_checkpoint, load_state, save_checkpoint
from tests.faults.common import (
    ROOT,
    env,
    kill_when,
    run_script,
    save_tiny_model,
    script,
    temp_leftovers,
    visible_files,
    write_dpr_train,
)
from tests.tiny_encoder import random_passages, save_tiny_biencoder, tiny_bert, tiny_tokenizer, write_passages_tsv

pytestmark = pytest.mark.slow

STEPS_PER_EPOCH = 12  # 48 questions, batch 4


def _train_args(model: Path, train: Path, out: Path, *extra: str) -> list[str]:
    return ["--pretrained_model_cfg", model, "--train_file", train, "--output_dir", out, "--batch_size", "4",
            "--num_train_epochs", "2", "--hard_negatives", "1", "--q_sequence_length", "16",
            "--p_sequence_length", "32", "--warmup_steps", "2", "--learning_rate", "1e-3", "--seed", "3",
            "--grad_cache", "--q_chunk_size", "2", "--ctx_chunk_size", "3", "--num_workers", "0", "--no_progress",
            *extra]


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return {f"{t}/{k}": v for t in ("question_encoder", "passage_encoder")
            for k, v in load_file(f"{ckpt}.{t}/model.safetensors").items()}


def _step_losses(out: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if r["type"] == "step"]


def test_training_killed_mid_epoch_resumes_to_the_uninterrupted_weights(tmp_path):
    model = save_tiny_model(tmp_path / "model")
    train = write_dpr_train(tmp_path / "train.json", 48)
    ref, out = tmp_path / "ref", tmp_path / "killed"
    run_script("train_dense_encoder.py", *_train_args(model, train, ref))

    # killed as soon as a write after the first complete checkpoint is in progress (its temp files exist)
    code = kill_when(script("train_dense_encoder.py", *_train_args(model, train, out, "--save_every_steps", "1")),
                     lambda _: latest_checkpoint(out) is not None and bool(temp_leftovers(out)), tmp_path / "log")
    assert code == -9, "the run finished before it could be killed"
    latest = latest_checkpoint(out)
    state = load_state(latest)
    assert (state["epoch"], state["iteration"]) < (1, STEPS_PER_EPOCH)  # killed before the end
    final = out / f"dpr_biencoder.1.{STEPS_PER_EPOCH}"
    assert not final.exists()

    proc = run_script("train_dense_encoder.py", *_train_args(model, train, out, "--save_every_steps", "1", "--resume"))
    assert f"resuming from {latest}" in proc.stderr
    a, b = _weights(ref / final.name), _weights(final)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _step_losses(out) == _step_losses(ref)
    assert temp_leftovers(out) == []  # what the kill left behind was removed by the re-run's saves


@pytest.fixture(scope="module")
def with_dev(tmp_path_factory) -> tuple[Path, Path, Path, Path]:
    """(model, train file, dev file, the uninterrupted run's output dir), validating at each epoch end."""
    d = tmp_path_factory.mktemp("with_dev")
    model, train, dev = save_tiny_model(d / "model"), write_dpr_train(d / "train.json", 48), write_dpr_train(
        d / "dev.json", 8, seed=1)
    run_script("train_dense_encoder.py", *_train_args(model, train, d / "ref", "--dev_file", dev))
    return model, train, dev, d / "ref"


@pytest.mark.parametrize("point", ["inside_first_save", "before_first_save"])
def test_training_killed_before_its_first_checkpoint_completes_resumes_to_the_uninterrupted_weights(point, with_dev,
                                                                                                    tmp_path):
    """Killed inside the first save (a published question tower, a passage tower under its temp name, no state file)
    or between the first validation and the first save: what is left is this run's own; --resume removes it and
    starts, ending where the uninterrupted run ends (it said "no checkpoint yet", then refused the directory as
    another run's)."""
    model, train, dev, ref = with_dev
    out = tmp_path / "killed"
    args = _train_args(model, train, out, "--dev_file", dev)
    killed = subprocess.run(script("tests/faults/kill_at.py", point, *args), cwd=ROOT, env=env(), capture_output=True,
                            text=True)
    assert killed.returncode == -9, killed.stderr[-3000:]
    first = out / f"dpr_biencoder.0.{STEPS_PER_EPOCH}"
    assert latest_checkpoint(out) is None and not first.exists()
    if point == "inside_first_save":
        assert Path(f"{first}.question_encoder").is_dir() and temp_leftovers(out)
    proc = run_script("train_dense_encoder.py", *args, "--resume")
    assert "no complete checkpoint" in proc.stderr and "starting fresh" in proc.stderr
    final = f"dpr_biencoder.1.{STEPS_PER_EPOCH}"
    a, b = _weights(ref / final), _weights(out / final)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _step_losses(out) == _step_losses(ref)
    assert temp_leftovers(out) == []
    assert json.loads((out / "best_checkpoint.json").read_text())["value"] == json.loads(
        (ref / "best_checkpoint.json").read_text())["value"]


def test_latest_checkpoint_ignores_incomplete_ones(tmp_path):
    """What a kill during save_checkpoint can leave: temp dirs/files, towers without the state file (written last)."""
    for it in (1, 2):
        (tmp_path / f"dpr_biencoder.0.{it}").write_bytes(b"state")
        for t in ("question_encoder", "passage_encoder"):
            (tmp_path / f"dpr_biencoder.0.{it}.{t}").mkdir()
    (tmp_path / ".dpr_biencoder.0.3.question_encoder.k3j2.tmp").mkdir()  # killed inside save_pretrained
    (tmp_path / "dpr_biencoder.0.4.question_encoder").mkdir()  # killed between the two towers
    for t in ("question_encoder", "passage_encoder"):  # killed after both towers, before the state file
        (tmp_path / f"dpr_biencoder.0.5.{t}").mkdir()
    (tmp_path / ".dpr_biencoder.0.5.x8a1.tmp").write_bytes(b"half a state")
    (tmp_path / "dpr_biencoder.0.6").write_bytes(b"state without towers")
    (tmp_path / "dpr_biencoder.0.7.question_encoder.tmp").mkdir()
    assert latest_checkpoint(tmp_path) == tmp_path / "dpr_biencoder.0.2"


def test_saving_a_checkpoint_removes_what_a_killed_save_of_it_left(tmp_path):
    enc = Encoder(tiny_bert(0))
    path = tmp_path / "dpr_biencoder.0.3"
    left = [tmp_path / ".dpr_biencoder.0.3.question_encoder.k3j2.tmp", tmp_path / ".dpr_biencoder.0.3.x8a1.tmp"]
    left[0].mkdir()
    (left[0] / "model.safetensors").write_bytes(b"half")
    left[1].write_bytes(b"half a state")
    (tmp_path / "dpr_biencoder.0.3.question_encoder").mkdir()  # a tower published before the kill
    save_checkpoint(path, enc, enc, tiny_tokenizer(), {"epoch": 0, "iteration": 3})
    assert temp_leftovers(tmp_path) == []
    assert latest_checkpoint(tmp_path) == path and load_state(path)["iteration"] == 3


def test_encoding_killed_mid_shard_redoes_only_that_shard(tmp_path, caplog):
    model = save_tiny_biencoder(tmp_path / "model")
    ctx = write_passages_tsv(tmp_path / "passages.tsv", random_passages(6000, seed=5))

    def args(prefix: Path, k: int) -> list[str]:
        return ["--model_file", str(model), "--ctx_file", str(ctx), "--out_file", str(prefix), "--shard_id", str(k),
                "--num_shards", "3", "--batch_size", "4", "--block_size", "8", "--p_sequence_length", "64",
                "--num_threads", "1"]

    ref, out = tmp_path / "ref" / "emb", tmp_path / "run" / "emb"
    for k in range(3):
        assert gen.main(args(ref, k)) == 0
    assert gen.main(args(out, 0)) == 0
    done0 = shard_paths(f"{out}_shard0")[0].stat().st_mtime_ns
    code = kill_when(script("generate_dense_embeddings.py", *args(out, 1)),
                     lambda err: re.search(r"shard 1:\s+[1-9]\d%", err) is not None, tmp_path / "log")
    assert code == -9
    assert not shard_paths(f"{out}_shard1")[0].exists() and not shard_paths(f"{out}_shard1")[1].exists()
    assert temp_leftovers(out.parent)  # the killed writer's temp file is still there

    for k in range(3):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            assert gen.main(args(out, k)) == 0
        assert ("skipping" in caplog.text) == (k == 0)
    assert shard_paths(f"{out}_shard0")[0].stat().st_mtime_ns == done0
    assert temp_leftovers(out.parent) == []  # the re-run removed shard 1's stale temp file
    for k in range(3):
        a, b = load_shard(f"{ref}_shard{k}.npy"), load_shard(f"{out}_shard{k}.npy")
        assert a.ids == b.ids
        assert np.array_equal(a.vectors, b.vectors)


def _release_input(d: Path, n: int) -> None:
    d.mkdir()
    with open(d / "passage_collection.json", "w", encoding="utf-8") as f:
        for i, (pid, text) in enumerate(random_passages(n, seed=1)):
            f.write(json.dumps({"paragraph_id": pid, "paragraph_text": text}, ensure_ascii=False) + "\n")
    for name, count in (("train.json", 200), ("dev.json", 50)):
        with open(d / name, "w", encoding="utf-8") as f:
            for q in range(count):
                f.write(json.dumps({"question_id": f"{name}{q}", "question": "北京是哪里",
                                    "answer_paragraphs": [{"paragraph_id": f"p{q:04d}"}]}, ensure_ascii=False) + "\n")


def _check_complete(out: Path, n_passages: int) -> None:
    """Every visible output parses to the end: passages.tsv and shards have all rows, JSON files are whole."""
    for p in visible_files(out):
        if p.name == "passages.tsv":
            assert sum(1 for _ in read_passages_tsv(p)) == n_passages
        elif p.suffix == ".tsv":
            assert sum(1 for _ in read_passages_tsv(p)) > 0
        elif p.name.startswith("dual_"):
            assert read_dpr_json(p)
        elif p.suffix == ".json":
            json.loads(p.read_text(encoding="utf-8"))


@pytest.mark.parametrize("kill_on", ["passages.tsv"])
def test_preprocessing_killed_leaves_only_complete_files(tmp_path, kill_on):
    n = 60000
    src, out = tmp_path / "in", tmp_path / "out"
    _release_input(src, n)
    args = ["--input_dir", src, "--output_dir", out, "--no_bm25"]
    code = kill_when(script("data/preprocess_dureader.py", *args),
                     lambda _: out.is_dir() and any(out.glob(f".{kill_on}.*")), tmp_path / "log")
    assert code == -9, "preprocessing finished before it could be killed"
    assert not (out / "retrieval_train_data" / "dual_train.json").exists()
    _check_complete(out, n)
    if kill_on == "passages.tsv":  # its temp file lives for seconds: the kill landed while it was being written
        assert temp_leftovers(out)
    assert all(p.name.startswith(".") and ".tmp" in p.name for p in temp_leftovers(out))

    run_script("data/preprocess_dureader.py", *args)
    _check_complete(out, n)
    assert temp_leftovers(out) == []  # the next run removes what the killed one left
    assert len(read_dpr_json(out / "retrieval_train_data" / "dual_train.json")) == 200
