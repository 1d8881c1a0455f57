"""The training script end to end: flags, checkpoint layout, exact resume."""
from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

from dpr.models.loading import load_encoder_pair
from train_dense_encoder import build_parser, main

REFERENCE = (
    "--max_grad_norm 2.0 --encoder_model_type hf_bert --pretrained_model_cfg /path/chinese-macbert-base --seed 12345 "
    "--q_sequence_length 32 --p_sequence_length 384 --warmup_steps 68 --batch_size 1024 --do_lower_case "
    "--train_file data/dual_train.json --dev_file data/dev_with_hn.json --output_dir ./outputs/macbert_model_ckp "
    "--learning_rate 3e-05 --num_train_epochs 8 --dev_batch_size 16 --val_av_rank_start_epoch 7 --grad_cache "
    "--global_loss_buf_sz 2097152 --val_av_rank_max_qs 1000 --q_chunk_size 512 --ctx_chunk_size 64 --fp16 "
    "--log_batch_step 20 --hard_negatives 4 --other_negatives 0"
)


def test_reference_command_flags_parse():
    a = build_parser().parse_args(shlex.split(REFERENCE))
    assert (a.max_grad_norm, a.seed, a.q_sequence_length, a.p_sequence_length) == (2.0, 12345, 32, 384)
    assert (a.warmup_steps, a.batch_size, a.learning_rate, a.num_train_epochs) == (68, 1024, 3e-05, 8)
    assert (a.dev_batch_size, a.val_av_rank_start_epoch, a.val_av_rank_max_qs) == (16, 7, 1000)
    assert (a.q_chunk_size, a.ctx_chunk_size, a.log_batch_step, a.hard_negatives, a.other_negatives) == (512, 64, 20, 4, 0)
    assert a.grad_cache and a.precision == "fp16" and a.do_lower_case and a.global_loss_buf_sz == 2097152
    assert a.pretrained_model_cfg == "/path/chinese-macbert-base" and a.encoder_model_type == "hf_bert"
    extra = build_parser().parse_args(shlex.split(REFERENCE) + shlex.split(
        "--shuffle_positive_ctx --val_av_rank_hard_neg 5 --val_av_rank_other_neg 6 --val_av_rank_bsz 7 "
        "--model_file m --checkpoint_file_name ck --pooling mean --similarity cosine --temperature 0.05 "
        "--shared_encoder --resume --gradient_checkpointing"))
    assert extra.shuffle_positive_ctx and extra.shared_encoder and extra.resume and extra.gradient_checkpointing
    assert (extra.val_av_rank_hard_neg, extra.val_av_rank_other_neg, extra.val_av_rank_bsz) == (5, 6, 7)
    assert (extra.similarity, extra.temperature, extra.pooling, extra.checkpoint_file_name) == ("cosine", 0.05, "mean", "ck")


@pytest.mark.parametrize("flag", ["--batch_size 0", "--batch_size -4", "--q_chunk_size 0", "--ctx_chunk_size -1",
                                  "--hard_negatives -1", "--temperature 0"])
def test_bad_sizes_are_rejected(flag, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(shlex.split(f"--train_file t --output_dir o {flag}"))
    assert flag.split()[0] in capsys.readouterr().err


def _args(model_dir, train, dev, out, *extra) -> list[str]:
    return ["--pretrained_model_cfg", str(model_dir), "--train_file", str(train), "--dev_file", str(dev),
            "--output_dir", str(out), "--batch_size", "8", "--num_train_epochs", "2", "--grad_cache",
            "--q_chunk_size", "3", "--ctx_chunk_size", "5", "--hard_negatives", "1", "--other_negatives", "1",
            "--q_sequence_length", "16", "--p_sequence_length", "32", "--warmup_steps", "2",
            "--learning_rate", "1e-3", "--val_av_rank_start_epoch", "1", "--val_av_rank_hard_neg", "2",
            "--dev_batch_size", "4", *(() if "--precision" in extra else ("--fp16",)), "--seed", "7", "--no_progress", "--log_batch_step", "2", *extra]


def _state(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    out = {}
    for tower in ("question_encoder", "passage_encoder"):
        for k, v in load_file(str(ckpt) + f".{tower}/model.safetensors").items():
            out[f"{tower}/{k}"] = v
    return out


def test_end_to_end_then_resume_equals_uninterrupted(tiny_model_dir, tiny_train_file, tiny_dev_file, tmp_path):
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    best = main(_args(tiny_model_dir, tiny_train_file, tiny_dev_file, a_dir, "--save_every_steps", "2",
                      "--num_workers", "1", "--eval_every_steps", "1"))
    # 24 questions, global batch 8: 3 iterations per epoch -> dpr_biencoder.{0,1}.3, mid-epoch .2 checkpoints
    for name in ("dpr_biencoder.0.2", "dpr_biencoder.0.3", "dpr_biencoder.1.2", "dpr_biencoder.1.3"):
        assert (a_dir / name).is_file()
        for tower in ("question_encoder", "passage_encoder"):
            assert (a_dir / f"{name}.{tower}" / "config.json").is_file()
            assert (a_dir / f"{name}.{tower}" / "tokenizer.json").is_file()
    state = torch.load(a_dir / "dpr_biencoder.1.3", weights_only=True)
    assert (state["epoch"], state["iteration"], state["global_step"]) == (1, 3, 6)
    # one metric selects across the run (NLL, every epoch end); average rank from epoch 1 is logged beside it
    log = [json.loads(line) for line in (a_dir / "train_log.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["metric"]) for r in log if r["type"] == "validation" and r["end_of_epoch"]] == [
        (0, "nll"), (1, "nll"), (1, "average_rank")]
    nll = {r["epoch"]: r["nll"] for r in log if r["type"] == "validation" and r["metric"] == "nll" and r["end_of_epoch"]}
    best_epoch = min(nll, key=nll.get)
    assert best["metric"] == "nll" and best["checkpoint"].endswith(f"dpr_biencoder.{best_epoch}.3")
    assert best["value"] == nll[best_epoch] and best["run_id"] == state["run_id"]
    assert json.loads((a_dir / "best_checkpoint.json").read_text()) == best
    assert (a_dir / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    AutoModel.from_pretrained(a_dir / "dpr_biencoder.1.3.question_encoder")  # plain transformers loads it
    q, p, _ = load_encoder_pair(a_dir / "dpr_biencoder.1.3")
    assert q is not p
    final_a = _weights(a_dir / "dpr_biencoder.1.3")
    assert not torch.equal(final_a["question_encoder/embeddings.word_embeddings.weight"],
                           _weights(a_dir / "dpr_biencoder.0.2")["question_encoder/embeddings.word_embeddings.weight"])

    # a run killed after step 2 leaves only dpr_biencoder.0.2; resuming it must end where the uninterrupted run did
    b_dir.mkdir()
    for suffix in ("", ".question_encoder", ".passage_encoder"):
        src = a_dir / f"dpr_biencoder.0.2{suffix}"
        (shutil.copytree if src.is_dir() else shutil.copy)(src, b_dir / src.name)
    main(_args(tiny_model_dir, tiny_train_file, tiny_dev_file, b_dir, "--resume", "--num_workers", "0",
               "--eval_every_steps", "1"))  # validation points within epochs leave training's RNG streams alone
    final_b = _weights(b_dir / "dpr_biencoder.1.3")
    assert final_a.keys() == final_b.keys()
    for k in final_a:
        assert torch.equal(final_a[k], final_b[k]), k
    log_b = [json.loads(line) for line in (b_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in log_b if r["type"] == "step"] == [r["loss"] for r in log if r["type"] == "step"]
    assert _state(b_dir / "dpr_biencoder.1.3")["run_id"] == state["run_id"]  # a resumed run keeps its id


def test_shared_encoder_writes_both_towers(tiny_model_dir, tiny_train_file, tiny_dev_file, tmp_path):
    out = tmp_path / "shared"
    main(_args(tiny_model_dir, tiny_train_file, tiny_dev_file, out, "--shared_encoder", "--num_train_epochs", "1",
               "--similarity", "cosine", "--num_workers", "0"))
    w = _weights(out / "dpr_biencoder.0.3")
    assert all(torch.equal(w[k], w[k.replace("question_encoder", "passage_encoder")]) for k in w if k.startswith("q"))
    settings = json.loads((out / "dpr_biencoder.0.3.question_encoder" / "dpr_encoder.json").read_text())
    assert settings["normalize"] is True


def test_non_finite_step_is_skipped(tiny_model_dir, tiny_train_file, tmp_path):
    from dpr.training.data import BiEncoderData
    from dpr.training.trainer import DistInfo, Trainer
    from train_dense_encoder import build_config, load_models

    args = build_parser().parse_args(_args(tiny_model_dir, tiny_train_file, tiny_train_file, tmp_path, "--num_workers",
                                           "0", "--precision", "fp32", "--temperature", "1",
                                           "--warmup_steps", "0"))  # DPR's warmup: step 0 of a warmup has lr 0
    q, p, tok = load_models(args, None)
    config = build_config(args, q.settings.normalize, torch.device("cpu"))
    trainer = Trainer(config, q, p, tok, BiEncoderData(tiny_train_file), None, torch.device("cpu"), DistInfo())
    batch = next(iter(trainer._loader(0, 0)))
    before = [t.detach().clone() for t in trainer.params]
    with torch.no_grad():
        q.model.embeddings.word_embeddings.weight[2, 0] = float("nan")  # [CLS]: every question's vector is nan
    _, _, skipped, norm = trainer.train_step(batch)
    assert skipped and not np.isfinite(norm)
    assert all(torch.equal(a, b) for a, b in zip(before[1:], trainer.params[1:]))
    with torch.no_grad():
        q.model.embeddings.word_embeddings.weight[2, 0] = 0.0
    _, _, skipped, norm = trainer.train_step(batch)
    assert not skipped and np.isfinite(norm)
    assert not torch.equal(before[-1], trainer.params[-1])


def test_freeze_embeddings_keeps_word_embeddings_and_trains_the_rest(tiny_model_dir, tiny_train_file, tiny_dev_file,
                                                                       tmp_path):
    out = tmp_path / "frozen"
    main(_args(tiny_model_dir, tiny_train_file, tiny_dev_file, out, "--shared_encoder", "--num_train_epochs", "1",
               "--freeze_embeddings", "--num_workers", "0"))
    before = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    after = _weights(out / "dpr_biencoder.0.3")
    key = next(k for k in before if k.endswith("word_embeddings.weight"))
    assert torch.equal(after[f"question_encoder/{key}"], before[key])
    layer = next(k for k in before if k.endswith("attention.self.query.weight"))
    assert not torch.equal(after[f"question_encoder/{layer}"], before[layer])


def test_attention_dropout_reaches_the_model_and_its_checkpoint(tiny_model_dir, tiny_train_file, tiny_dev_file,
                                                                tmp_path):
    out = tmp_path / "no_attn_dropout"
    main(_args(tiny_model_dir, tiny_train_file, tiny_dev_file, out, "--num_train_epochs", "1",
               "--attention_dropout", "0", "--num_workers", "0"))
    for tower in ("question_encoder", "passage_encoder"):
        saved = json.loads((out / f"dpr_biencoder.0.3.{tower}" / "config.json").read_text())
        assert saved["attention_probs_dropout_prob"] == 0.0
    default = json.loads((Path(tiny_model_dir) / "config.json").read_text())["attention_probs_dropout_prob"]
    assert default > 0  # the flag changed something


def test_attention_dropout_out_of_range_is_one_error_line(tiny_model_dir, tiny_train_file, tiny_dev_file, tmp_path,
                                                          capsys):
    with pytest.raises(SystemExit):
        main(_args(tiny_model_dir, tiny_train_file, tiny_dev_file, tmp_path / "o", "--attention_dropout", "1.5",
                   "--num_workers", "0"))
    err = capsys.readouterr().err
    assert "--attention_dropout 1.5" in err and "[0, 1)" in err


# ----- flag audit: every flag reaches the typed config / tower options / the script's own steps, or says it is a
# no-op; and every config field is read by the library -----

NO_EFFECT = "accepted for compatibility, no effect"
NON_DEFAULT = {"--similarity": "cosine", "--pooling": "mean", "--precision": "fp32", "--checkpoint_file_name": "ck",
               "--pretrained_model_cfg": "elsewhere", "--model_file": "m", "--dev_file": "d.json"}


def _what_runs(argv: list[str]) -> tuple:
    """Everything a parsed command line decides: TrainConfig, TowerOptions, and what main() reads itself."""
    from train_dense_encoder import build_config, tower_options

    a = build_parser().parse_args(argv)
    return (build_config(a, normalize=False, device=torch.device("cuda")),  # a CUDA device resolves precision as-is
            tower_options(a, a.model_file or a.pretrained_model_cfg),
            (a.resume, a.model_file, a.gradient_checkpointing, a.freeze_embeddings, a.dist_timeout_minutes,
             a.attention_dropout, a.overwrite_output_dir))


def _flags():
    for action in build_parser()._actions:
        if action.option_strings and action.dest != "help":
            yield action


@pytest.mark.parametrize("action", list(_flags()), ids=lambda a: a.option_strings[0])
def test_every_flag_changes_the_run_or_says_it_has_no_effect(action, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    base = ["--train_file", "t.json", "--output_dir", "o"]
    flag = action.option_strings[0]
    if flag in ("--fp16", "--bf16"):  # auto is fp16 on CUDA: compare with a forced fp32 run
        base = base + ["--fp32"]
        assert _what_runs(base[:-1] + [flag]) != _what_runs(base)
        return
    if action.nargs == 0:
        changed = base + [flag]
    elif action.choices:
        changed = base + [flag, NON_DEFAULT.get(flag) or next(c for c in action.choices if c != action.default)]
    elif flag in NON_DEFAULT:
        changed = base + [flag, NON_DEFAULT[flag]]
    elif flag in ("--train_file", "--output_dir"):
        changed = ["--train_file", "other.json", "--output_dir", "o2"]
    else:
        changed = base + [flag, "7"]
    if NO_EFFECT in (action.help or "").lower():
        assert _what_runs(changed) == _what_runs(base), f"{flag} says it has no effect, but it changes the run"
    else:
        assert _what_runs(changed) != _what_runs(base), f"{flag} is parsed and goes nowhere"


def test_every_config_field_is_read_by_the_library():
    import ast
    import dataclasses

    from dpr.training.config import TrainConfig

    root = Path(__file__).resolve().parents[2] / "dpr"
    read = set()
    for path in root.rglob("*.py"):
        if path.name == "config.py" and path.parent.name == "training":
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
            # derived properties read fields as self.x
            read |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                     and n.value.id == "self"}
            continue
        read |= {n.attr for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(n, ast.Attribute)}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    # train_file/dev_file/max_*_questions are read by the script when it loads the data
    script = (root.parent / "train_dense_encoder.py").read_text(encoding="utf-8")
    read |= {n.attr for n in ast.walk(ast.parse(script)) if isinstance(n, ast.Attribute)
             and isinstance(n.value, ast.Name) and n.value.id == "config"}
    assert fields - read == set()


def test_no_effect_flags_are_listed():
    """The flags docs/reference.md's compatibility table lists for this script."""
    noop = sorted(a.option_strings[0] for a in _flags() if NO_EFFECT in (a.help or "").lower())
    assert noop == ["--encoder_model_type", "--global_loss_buf_sz"]


def test_a_training_step_waits_on_the_device_once_plus_once_per_padded_forward(tiny_model_dir, tiny_train_file,
                                                                                tmp_path):
    """Every frame counted (tests/host_waits.py), GradScaler on as fp16 turns it on (CUDA): 2 question and 4 passage
    chunks cost one read (loss, correct, norm, scale together) plus transformers' padding test in each forward of a
    padded chunk (two forwards per chunk); an unpadded chunk costs none. Was ~20 by reading (issue 27)."""
    from dpr.training.data import BiEncoderData, unpack_chunks
    from dpr.training.trainer import DistInfo, Trainer
    from tests.host_waits import HostWaits
    from train_dense_encoder import build_config, load_models

    args = build_parser().parse_args(_args(tiny_model_dir, tiny_train_file, tiny_train_file, tmp_path, "--num_workers",
                                           "0", "--precision", "fp32", "--q_chunk_size", "4", "--ctx_chunk_size", "6"))
    q, p, tok = load_models(args, None)
    trainer = Trainer(build_config(args, q.settings.normalize, torch.device("cpu")), q, p, tok,
                      BiEncoderData(tiny_train_file), None, torch.device("cpu"), DistInfo())
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)  # the fp16 path's scaler (CUDA-only otherwise)
    batch = next(iter(trainer._loader(0, 0)))
    chunks = unpack_chunks(batch["q"]) + unpack_chunks(batch["p"])
    padded = sum(not bool(c["attention_mask"].all()) for c in chunks)
    assert (len(unpack_chunks(batch["q"])), len(unpack_chunks(batch["p"]))) == (2, 4) and 0 < padded < 6
    with HostWaits() as waits:
        loss, correct, skipped, norm = trainer.train_step(batch)
    device_reads = [w for w in waits.where if not w.startswith("data.py:unpack_chunks")]  # host tensors' shapes
    assert sorted(device_reads) == sorted(["grad_cache.py:read_together:tolist"]
                                          + ["masking_utils.py:_ignore_bidirectional_mask_sdpa:__bool__"] * 2 * padded)
    assert isinstance(loss, float) and isinstance(correct, int) and not skipped and np.isfinite(norm)
    assert trainer.scaler.get_scale() == 2.0**10  # no overflow: the scale stays (it grows after 2000 good steps)
    before = [t.detach().clone() for t in trainer.params]
    with torch.no_grad():
        q.model.embeddings.word_embeddings.weight[2, 0] = float("inf")  # inf gradients: the scaler skips the step
    _, _, skipped, norm = trainer.train_step(batch)
    assert skipped and not np.isfinite(norm) and trainer.scaler.get_scale() == 2.0**9
    assert all(torch.equal(a, b) for a, b in zip(before[1:], trainer.params[1:]))
