"""bench/bench_bf16_step.py runs at toy size, and its variant columns change what they say they change."""
import json

import torch

from bench import bench_bf16_step
from dpr.models.encoder import Encoder, EncoderSettings
from tests.data_scripts import ROOT  # noqa: F401  (puts the repository on sys.path like the other script tests)
from tests.tiny_encoder import random_passages, tiny_bert, tiny_tokenizer


def toy_inputs(tmp_path):
    model = tmp_path / "tiny"
    settings = EncoderSettings(pooling="mean", normalize=True, query_prefix="问", passage_prefix="文")
    Encoder(tiny_bert(1), settings).save_pretrained(model, tiny_tokenizer())
    passages = random_passages(12, seed=5)
    ctx = lambda p: {"title": "", "text": p[1], "passage_id": p[0]}  # noqa: E731
    data = [{"question": p[1][:8], "answers": [], "positive_ctxs": [ctx(p)], "negative_ctxs": [],
             "hard_negative_ctxs": [ctx(passages[(k + 5) % 12])]} for k, p in enumerate(passages[:6])]
    (tmp_path / "train.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return ["--model", str(model), "--data", str(tmp_path / "train.json"), "--questions", "4", "--repeats", "1",
            "--q_chunk", "2", "--ctx_chunk", "4", "--p_len", "32", "--no_pure_bf16"]


def test_report_has_every_column_and_phase(tmp_path, capsys):
    report = bench_bf16_step.main(toy_inputs(tmp_path) + ["--variants", "--profile", "3"])
    assert json.loads(capsys.readouterr().out)["questions"] == 4
    assert set(report["median_s"]) == {"fp32", "bf16", "bf16_res", "fp32_flash", "bf16_flash"}
    assert {"pass1", "pass2", "step", "raw_fwd_bwd"} <= set(report["median_s"]["bf16_res"])
    assert report["passages"] == 8 and set(report["profile_top_ops"]) == set(report["median_s"])
    assert "speedup_fp32_flash_over_bf16_flash" in report and "speedup_fp32_over_bf16_res" in report


def test_variants_change_the_model_and_restore_it(tmp_path):
    args = bench_bf16_step.argparse.Namespace(
        model=str(tmp_path / "tiny"), data=str(tmp_path / "train.json"), questions=4, hard_negatives=1, q_len=32,
        p_len=32, q_chunk=2, ctx_chunk=4, freeze_embeddings=False)
    toy_inputs(tmp_path)
    b = bench_bf16_step.Bench(args)
    seen = {}
    hook = b.encoder.model.encoder.layer[0].attention.register_forward_pre_hook(
        lambda m, a, kw: seen.__setitem__("dtype", (a[0] if a else kw["hidden_states"]).dtype), with_kwargs=True)
    chunk = b.batch["p_chunks"][0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        b.encoder(**chunk)
        assert seen["dtype"] == torch.float32  # autocast alone: the residual stream stays fp32
        with b.variant("bf16_res"):
            b.encoder(**chunk)
            assert seen["dtype"] == torch.bfloat16
        b.encoder(**chunk)
        assert seen["dtype"] == torch.float32
    hook.remove()
    drops = [m for n, m in b.encoder.model.named_modules() if n.endswith("attention.self.dropout")]
    assert drops and all(m.p > 0 for m in drops)
    with b.variant("bf16_flash"):
        assert all(m.p == 0 for m in drops)
    assert all(m.p > 0 for m in drops)
