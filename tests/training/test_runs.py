"""Runs that say what they did: starting weights vs resume, run ids, one best metric, retention, the training plot."""
from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dpr.training import checkpoint as ckpt
from dpr.training.config import TrainConfig
from dpr.training.plotting import curve_series, plot_training_curves, smooth
from tests.training.builders import make_dpr_json
from train_dense_encoder import build_parser, load_models, main


def _args(model, train, out, *extra, dev=None) -> list[str]:
    """24 train questions, global batch 8: 3 steps an epoch."""
    return ["--pretrained_model_cfg", str(model), "--train_file", str(train), "--output_dir", str(out),
            *(("--dev_file", str(dev)) if dev else ()), "--batch_size", "8", "--num_train_epochs", "1",
            "--q_sequence_length", "16", "--p_sequence_length", "32", "--warmup_steps", "1", "--learning_rate", "1e-3",
            "--precision", "fp32", "--seed", "3", "--no_progress", "--num_workers", "0", "--dev_batch_size", "4",
            "--val_av_rank_hard_neg", "2", *extra]


def _state(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path) + ".question_encoder/model.safetensors")


def _names(out: Path) -> set[str]:
    return {p.name for p in out.glob("dpr_biencoder.*") if p.is_file()}


# ----- 1. starting weights vs resume -----

def test_model_file_checkpoint_gives_starting_weights_to_a_new_run(tiny_model_dir, tiny_train_file, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    main(_args(tiny_model_dir, tiny_train_file, a))
    finished = a / "dpr_biencoder.0.3"
    new_train = make_dpr_json(tmp_path / "new_train.json", 16, seed=5)  # e.g. re-mined hard negatives: 2 steps
    argv = _args(tiny_model_dir, new_train, b, "--model_file", str(finished))
    q, _, _ = load_models(build_parser().parse_args(argv), None)
    start = q.model.state_dict()
    assert all(torch.equal(start[k], v) for k, v in _weights(finished).items() if k in start)  # A's final weights
    main(argv)
    state = _state(b / "dpr_biencoder.0.2")  # its own schedule (2 steps), its own directory, its own run id
    assert (state["global_step"], state["epoch"]) == (2, 0)
    assert state["run_id"] != _state(finished)["run_id"]
    assert not torch.equal(_weights(b / "dpr_biencoder.0.2")["encoder.layer.0.attention.self.query.weight"],
                           _weights(finished)["encoder.layer.0.attention.self.query.weight"])
    assert _names(a) == {"dpr_biencoder.0.3"}  # the finished run is left alone


def test_resume_of_a_finished_run_has_nothing_to_do(tiny_model_dir, tiny_train_file, tmp_path, caplog):
    out = tmp_path / "run"
    main(_args(tiny_model_dir, tiny_train_file, out))
    before = (out / "dpr_biencoder.0.3").stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        main(_args(tiny_model_dir, tiny_train_file, out, "--resume"))  # returns: exit 0
    assert "already finished" in caplog.text and "nothing to do" in caplog.text
    assert (out / "dpr_biencoder.0.3").stat().st_mtime_ns == before and _names(out) == {"dpr_biencoder.0.3"}


def test_a_run_that_would_train_no_step_exits_non_zero(tiny_model_dir, tiny_train_file, tmp_path, monkeypatch, capsys):
    from dpr.training.trainer import Trainer

    monkeypatch.setattr(Trainer, "_batches", lambda self, epoch: [])
    with pytest.raises(SystemExit) as e:
        main(_args(tiny_model_dir, tiny_train_file, tmp_path / "o"))
    assert e.value.code != 0 and "give no training step" in capsys.readouterr().err
    assert not _names(tmp_path / "o")


def test_a_fit_that_trains_nothing_exits_non_zero(tiny_model_dir, tiny_train_file, tmp_path, monkeypatch, capsys):
    from dpr.training.trainer import Trainer

    monkeypatch.setattr(Trainer, "fit", lambda self: {})
    with pytest.raises(SystemExit) as e:
        main(_args(tiny_model_dir, tiny_train_file, tmp_path / "o"))
    assert e.value.code != 0 and "trained none" in capsys.readouterr().err


def test_fused_adamw_resumes_a_state_saved_without_the_fused_kernel(tiny_model_dir, tiny_train_file, tmp_path,
                                                                   monkeypatch):
    """A state saved by plain AdamW (before fused AdamW, or its fallback) has groups with fused None; loaded as it is
    into the fused optimizer, fp16's GradScaler handed found_inf to the plain loop: AssertionError on the first step.
    fp16 autocast + GradScaler run on this CPU as the stand-in for CUDA's (the policy would fall back to fp32 here)."""
    import dpr.training.config as config

    real = config.resolve_amp_dtype
    monkeypatch.setattr(config, "resolve_amp_dtype", lambda device, mode="auto": torch.float16 if mode == "fp16"
                        else real(device, mode))
    out = tmp_path / "run"
    main(_args(tiny_model_dir, tiny_train_file, out, "--precision", "fp16"))
    state = _state(out / "dpr_biencoder.0.3")
    assert state["optimizer"]["param_groups"][0]["fused"] is True  # what this torch builds; now make it plain's
    for group in state["optimizer"]["param_groups"]:
        group["fused"] = None
    torch.save(state, out / "dpr_biencoder.0.3")
    main(_args(tiny_model_dir, tiny_train_file, out, "--precision", "fp16", "--num_train_epochs", "2", "--resume"))
    resumed = _state(out / "dpr_biencoder.1.3")
    assert resumed["global_step"] == 6 and resumed["config"]["precision"] == "fp16" and resumed["scaler"]["scale"] > 0
    assert resumed["optimizer"]["param_groups"][0]["fused"] is True


def test_loading_an_optimizer_state_keeps_the_kernel_and_places_step_for_it():
    from dpr.training.trainer import load_optimizer_state

    params = [torch.nn.Parameter(torch.randn(4, 3))]
    plain = torch.optim.AdamW(params, lr=1e-3)
    params[0].grad = torch.randn(4, 3)
    plain.step()
    saved = plain.state_dict()
    saved["state"][0]["step"] = saved["state"][0]["step"].double()  # any dtype a saved step may have
    fused = torch.optim.AdamW(params, lr=1e-3, fused=True)
    load_optimizer_state(fused, saved)
    step = fused.state[params[0]]["step"]
    assert fused.param_groups[0]["fused"] is True and float(step) == 1.0
    assert (step.device, step.dtype) == (params[0].device, torch.float32)
    load_optimizer_state(plain, fused.state_dict())  # and the other way: plain stays plain
    assert not plain.param_groups[0]["fused"]


# ----- 2. run ids -----

def test_fresh_run_refuses_another_runs_directory_unless_overwrite(tiny_model_dir, tiny_train_file, tiny_dev_file,
                                                                   tmp_path, capsys):
    out = tmp_path / "run"
    best = main(_args(tiny_model_dir, tiny_train_file, out, dev=tiny_dev_file))
    first_id = _state(out / "dpr_biencoder.0.3")["run_id"]
    assert first_id and best["run_id"] == first_id
    assert json.loads((out / "best_checkpoint.json").read_text())["run_id"] == first_id
    before = (out / "dpr_biencoder.0.3").read_bytes()
    with pytest.raises(SystemExit):
        main(_args(tiny_model_dir, tiny_train_file, out))  # fresh, no dev file: would have overwritten .0.3
    err = capsys.readouterr().err
    assert "another run's checkpoints" in err and "--overwrite_output_dir" in err and "--resume" in err
    assert (out / "dpr_biencoder.0.3").read_bytes() == before
    main(_args(tiny_model_dir, tiny_train_file, out, "--overwrite_output_dir", "--seed", "4"))
    assert _state(out / "dpr_biencoder.0.3")["run_id"] != first_id
    assert not (out / "best_checkpoint.json").exists()  # the other run's record went with its checkpoints
    path, why = ckpt.pick_checkpoint(out)
    assert path.name == "dpr_biencoder.0.3" and why == "newest"


def _tree(out: Path) -> dict[str, bytes]:
    """Every file under `out` (temp names too) with its bytes."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_overwrite_refuses_a_starting_model_it_would_delete(tiny_model_dir, tiny_train_file, tmp_path, capsys):
    """README's retraining on re-mined negatives with the refusal's own suggestion: --model_file OUT/dpr_biencoder.0.3
    --output_dir OUT --overwrite_output_dir deleted the model it was about to load, then failed."""
    out = tmp_path / "run"
    main(_args(tiny_model_dir, tiny_train_file, out))
    before = _tree(out)
    for model in (out / "dpr_biencoder.0.3", out / "dpr_biencoder.0.3.question_encoder"):
        with pytest.raises(SystemExit) as e:
            main(_args(tiny_model_dir, tiny_train_file, out, "--model_file", str(model), "--overwrite_output_dir"))
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert e.value.code == 2 and len(lines) == 1, err
        assert str(model) in lines[0] and "starting model is among the files this run deletes" in lines[0]
        assert _tree(out) == before


@pytest.mark.parametrize("bad", ["train", "dev", "model"])
def test_overwrite_deletes_nothing_until_models_and_data_have_loaded(bad, tiny_model_dir, tiny_train_file,
                                                                     tiny_dev_file, tmp_path, capsys):
    """A mistyped --train_file (or --dev_file, or model) with --overwrite_output_dir removed the old run, then said
    "file not found"."""
    out = tmp_path / "run"
    main(_args(tiny_model_dir, tiny_train_file, out, dev=tiny_dev_file))
    before = _tree(out)
    missing = str(tmp_path / "missing")
    argv = _args(missing if bad == "model" else tiny_model_dir, missing if bad == "train" else tiny_train_file, out,
                 "--overwrite_output_dir", dev=missing if bad == "dev" else tiny_dev_file)
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code != 0 and "missing" in capsys.readouterr().err
    assert _tree(out) == before


def test_overwrite_deletes_right_before_training_and_takes_killed_saves_temps(tiny_model_dir, tiny_train_file,
                                                                             tmp_path, monkeypatch):
    """The old run's files (and a killed save's .dpr_biencoder.*.tmp folders) are gone when the first step starts,
    not before the trainer exists; a fresh run claiming a directory with only such temps removes them too."""
    from dpr.training.trainer import Trainer

    out = tmp_path / "run"
    main(_args(tiny_model_dir, tiny_train_file, out))
    temp = out / ".dpr_biencoder.0.2.passage_encoder.k3j2.tmp"
    temp.mkdir()
    (temp / "model.safetensors").write_bytes(b"half")
    seen = {}
    real_init, real_fit = Trainer.__init__, Trainer.fit

    def init(self, *args, **kwargs):
        seen["at_init"] = sorted(p.name for p in out.iterdir())
        real_init(self, *args, **kwargs)

    def fit(self):
        seen["at_fit"] = sorted(p.name for p in out.iterdir())
        return real_fit(self)

    monkeypatch.setattr(Trainer, "__init__", init)
    monkeypatch.setattr(Trainer, "fit", fit)
    main(_args(tiny_model_dir, tiny_train_file, out, "--overwrite_output_dir", "--seed", "4"))
    assert "dpr_biencoder.0.3" in seen["at_init"] and temp.name in seen["at_init"]
    assert not [n for n in seen["at_fit"] if n.startswith(("dpr_biencoder", ".dpr_biencoder"))]
    assert not temp.exists()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / temp.name).mkdir()
    main(_args(tiny_model_dir, tiny_train_file, fresh))  # temps alone are no run to refuse: removed
    assert not (fresh / temp.name).exists() and _names(fresh) == {"dpr_biencoder.0.3"}


def test_pick_checkpoint_ignores_a_best_record_of_another_run(tiny_model_dir, tiny_train_file, tiny_dev_file,
                                                              tmp_path):
    """The issue's case: a record left by run A names dpr_biencoder.0.3, which run B (no dev file) overwrote."""
    a, b = tmp_path / "a", tmp_path / "b"
    main(_args(tiny_model_dir, tiny_train_file, a, dev=tiny_dev_file))
    main(_args(tiny_model_dir, tiny_train_file, b, "--seed", "4"))
    assert ckpt.pick_checkpoint(a)[1].startswith("best validation nll")
    for suffix in ("", ".question_encoder", ".passage_encoder"):  # B's checkpoint takes A's name
        target = a / f"dpr_biencoder.0.3{suffix}"
        shutil.rmtree(target) if target.is_dir() else target.unlink()
        src = b / f"dpr_biencoder.0.3{suffix}"
        (shutil.copytree if src.is_dir() else shutil.copy)(src, target)
    path, why = ckpt.pick_checkpoint(a)
    assert path.name == "dpr_biencoder.0.3" and "best validation" not in why and "another run" in why


def test_checkpoints_from_before_run_ids_are_read_as_before_with_one_warning(tiny_model_dir, tiny_train_file,
                                                                             tiny_dev_file, tmp_path, caplog):
    out = tmp_path / "old"
    main(_args(tiny_model_dir, tiny_train_file, out, "--num_train_epochs", "2", dev=tiny_dev_file))
    for name in ("dpr_biencoder.0.3", "dpr_biencoder.1.3"):  # strip the ids, as an older version wrote them
        state = _state(out / name)
        del state["run_id"]
        state["best"].pop("run_id", None)
        torch.save(state, out / name)
    record = json.loads((out / "best_checkpoint.json").read_text())
    del record["run_id"]
    (out / "best_checkpoint.json").write_text(json.dumps(record))
    ckpt._warned_no_run_id.clear()
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            path, why = ckpt.pick_checkpoint(out)
            assert path.name == Path(record["checkpoint"]).name and why.startswith("best validation")
    assert caplog.text.count("before run ids existed") == 1
    main(_args(tiny_model_dir, tiny_train_file, out, "--num_train_epochs", "3", "--resume"))  # resumes as before
    assert _state(out / "dpr_biencoder.2.3")["global_step"] == 9


# ----- 3. one best metric -----

def test_best_record_selects_on_one_metric_across_the_run():
    late = TrainConfig(train_file="t", output_dir="o", num_train_epochs=8, val_av_rank_start_epoch=7)
    assert late.best_metric == "nll"
    assert [late.validation_metrics(e) for e in (0, 6, 7)] == [("nll",), ("nll",), ("nll", "average_rank")]
    early = TrainConfig(train_file="t", output_dir="o", num_train_epochs=8, val_av_rank_start_epoch=0)
    assert early.best_metric == "average_rank"
    assert {early.validation_metrics(e) for e in range(8)} == {("average_rank",)}


def test_a_worse_late_average_rank_does_not_reset_the_best(tiny_model_dir, tiny_train_file, tiny_dev_file, tmp_path,
                                                           monkeypatch, caplog):
    """Metric switch (VAL_AV_RANK_START_EPOCH=1 of 2 epochs): epoch 0's better NLL stays the best."""
    from dpr.training.trainer import Trainer

    nll = iter([0.5, 0.9])
    monkeypatch.setattr(Trainer, "validate_nll", lambda self: {"nll": next(nll), "accuracy": 0.5})
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        best = main(_args(tiny_model_dir, tiny_train_file, out, "--num_train_epochs", "2", "--val_av_rank_start_epoch",
                          "1", dev=tiny_dev_file))
    assert (best["metric"], best["value"], Path(best["checkpoint"]).name) == ("nll", 0.5, "dpr_biencoder.0.3")
    assert "best checkpoint: lowest dev nll, computed at every epoch end" in caplog.text
    assert ckpt.pick_checkpoint(out)[0].name == "dpr_biencoder.0.3"


class _Killed(BaseException):
    """A stand-in for kill -9 at one point of a run (nothing after it runs)."""


def test_the_best_record_is_written_after_its_checkpoint_and_rewritten_on_resume(tiny_model_dir, tiny_train_file,
                                                                                 tiny_dev_file, tmp_path, monkeypatch):
    """Killed between epoch 1's validation (a new best, 0.5) and its save; the resumed run re-validates epoch 1 worse
    (0.95, e.g. another world size) than epoch 0 (0.9). The record must name 0.3 at 0.9, never 1.3 at 0.5."""
    from dpr.training.trainer import Trainer

    out = tmp_path / "run"
    nll = iter([0.9, 0.5, 0.95])
    monkeypatch.setattr(Trainer, "validate_nll", lambda self: {"nll": next(nll), "accuracy": 0.5})
    real_save = ckpt.save_checkpoint

    def killed_at_epoch_1(path, *args, **kwargs):
        if Path(path).name == "dpr_biencoder.1.3":
            raise _Killed
        real_save(path, *args, **kwargs)

    monkeypatch.setattr(ckpt, "save_checkpoint", killed_at_epoch_1)
    args = _args(tiny_model_dir, tiny_train_file, out, "--num_train_epochs", "2", dev=tiny_dev_file)
    with pytest.raises(_Killed):
        main(args)
    record = json.loads((out / "best_checkpoint.json").read_text())
    assert (Path(record["checkpoint"]).name, record["value"]) == ("dpr_biencoder.0.3", 0.9)  # not the unsaved 1.3
    (out / "best_checkpoint.json").write_text(json.dumps({**record, "checkpoint": str(out / "dpr_biencoder.1.3"),
                                                          "value": 0.5}))  # what the old order left on disk
    monkeypatch.setattr(ckpt, "save_checkpoint", real_save)
    best = main([*args, "--resume"])
    assert (Path(best["checkpoint"]).name, best["value"]) == ("dpr_biencoder.0.3", 0.9)
    record = json.loads((out / "best_checkpoint.json").read_text())
    assert (Path(record["checkpoint"]).name, record["value"]) == ("dpr_biencoder.0.3", 0.9)
    assert ckpt.pick_checkpoint(out)[0].name == "dpr_biencoder.0.3"


# ----- 5. retention -----

def test_keep_checkpoints_keeps_the_newest_and_the_best_of_this_run_only(tiny_model_dir, tiny_train_file,
                                                                         tiny_dev_file, tmp_path, monkeypatch):
    from dpr.training.trainer import Trainer

    nll = iter([0.5, 0.9])  # epoch 0 is the best
    monkeypatch.setattr(Trainer, "validate_nll", lambda self: {"nll": next(nll), "accuracy": 0.5})
    out = tmp_path / "run"
    main(_args(tiny_model_dir, tiny_train_file, out, "--num_train_epochs", "2", "--save_every_steps", "1",
               "--keep_checkpoints", "1", dev=tiny_dev_file))
    assert _names(out) == {"dpr_biencoder.0.3", "dpr_biencoder.1.3"}  # best + newest
    assert sorted(p.name for p in out.glob("dpr_biencoder.*.*_encoder")) == [
        "dpr_biencoder.0.3.passage_encoder", "dpr_biencoder.0.3.question_encoder",
        "dpr_biencoder.1.3.passage_encoder", "dpr_biencoder.1.3.question_encoder"]


def test_pruning_never_touches_another_runs_checkpoints(tiny_model_dir, tiny_train_file, tmp_path):
    mine, other = tmp_path / "mine", tmp_path / "other"
    main(_args(tiny_model_dir, tiny_train_file, mine, "--save_every_steps", "1"))
    main(_args(tiny_model_dir, tiny_train_file, other, "--seed", "4"))
    for suffix in ("", ".question_encoder", ".passage_encoder"):  # another run's set beside ours
        src = other / f"dpr_biencoder.0.3{suffix}"
        (shutil.copytree if src.is_dir() else shutil.copy)(src, mine / f"dpr_biencoder.0.0{suffix}")
    run_id = _state(mine / "dpr_biencoder.0.3")["run_id"]
    removed = ckpt.prune_checkpoints(mine, "dpr_biencoder", run_id, keep=1)
    assert sorted(p.name for p in removed) == ["dpr_biencoder.0.1", "dpr_biencoder.0.2"]
    assert _names(mine) == {"dpr_biencoder.0.0", "dpr_biencoder.0.3"}
    assert (mine / "dpr_biencoder.0.0.question_encoder").is_dir() and not (mine / "dpr_biencoder.0.1.question_encoder").exists()


# ----- 6. the training plot -----

def test_eval_every_steps_adds_points_within_the_epoch_for_the_log_only(tiny_model_dir, tiny_train_file,
                                                                        tiny_dev_file, tmp_path):
    out = tmp_path / "run"
    best = main(_args(tiny_model_dir, tiny_train_file, out, "--eval_every_steps", "1", dev=tiny_dev_file))
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    vals = [(r["step"], r["metric"], r["end_of_epoch"]) for r in log if r["type"] == "validation"]
    assert vals == [(1, "nll", False), (2, "nll", False), (3, "nll", True)]
    assert _names(out) == {"dpr_biencoder.0.3"}  # no checkpoint for the points within the epoch
    end = next(r for r in log if r["type"] == "validation" and r["end_of_epoch"])
    assert best["value"] == end["nll"] and best["checkpoint"].endswith("dpr_biencoder.0.3")
    series = curve_series(log)
    assert [p[0] for p in series["validation"]["nll"]] == [1, 2, 3] and len(series["lr"]) == 3
    assert (out / "training_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_the_smoothed_loss_follows_the_trend_without_the_zig_zag(tmp_path):
    raw = [0.38 - 0.003 * i + (0.1 if i % 2 else -0.1) for i in range(100)]
    s = smooth(raw)
    assert len(s) == len(raw) and s[0] == raw[0]
    zigzag = lambda x: sum(abs(x[i + 1] - x[i]) for i in range(len(x) - 1))  # noqa: E731
    assert zigzag(s) < zigzag(raw) / 5
    log = [{"type": "step", "step": i + 1, "loss": v, "lr": 1e-5} for i, v in enumerate(raw)]
    log.append({"type": "validation", "step": 100, "epoch": 0, "metric": "average_rank", "average_rank": 3.0})
    plot_training_curves(log, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_one_non_finite_loss_leaves_the_rest_of_the_smoothed_line_finite(tmp_path):
    """The issue's case: one NaN (or inf) loss must not make every later smoothed point NaN."""
    raw = [1.0] * 5 + [float("nan")] + [1.0] * 60
    assert smooth(raw).tolist() == [1.0] * 66
    s = smooth([2.0, float("inf"), 4.0, float("nan"), float("nan"), 6.0], window=2)
    assert s[:3].tolist() == [2.0, 2.0, 4.0] and s[3] == 4.0 and math.isnan(s[4]) and s[5] == 6.0  # (nan, nan): none
    log = [{"type": "step", "step": i + 1, "loss": v, "lr": 1e-5} for i, v in enumerate(raw)]
    assert all(math.isfinite(v) for v in curve_series(log)["loss_smooth"])
    plot_training_curves(log, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_help_states_the_rule():
    helps = {a.dest: " ".join(a.help.split()) for a in build_parser()._actions if a.help}
    assert "Always a NEW run" in helps["model_file"] and "use --resume" in helps["model_file"]
    assert "--model_file never resumes" in helps["resume"]
