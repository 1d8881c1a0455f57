"""bench/demo_step_isa.py runs at toy size: one JSON line per instruction-set cap, each cap set in its own process
(torch reports AVX2 under the AVX2 caps), and both training-step variants timed."""
import json
import subprocess
import sys

from dpr.models.encoder import Encoder, EncoderSettings
from tests.data_scripts import ROOT
from tests.tiny_encoder import random_passages, tiny_bert, tiny_tokenizer


def test_each_cap_runs_in_its_own_process_with_both_variants(tmp_path):
    model = tmp_path / "tiny"
    Encoder(tiny_bert(1), EncoderSettings(pooling="mean", normalize=True)).save_pretrained(model, tiny_tokenizer())
    passages = random_passages(40, seed=3)
    ctx = lambda p: {"title": "", "text": p[1], "passage_id": p[0]}  # noqa: E731
    data = [{"question": p[1][:8], "answers": [], "positive_ctxs": [ctx(p)], "negative_ctxs": [],
             "hard_negative_ctxs": [ctx(passages[(k + 7) % 40])]} for k, p in enumerate(passages[:34])]
    (tmp_path / "train.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "demo_step_isa.py"), "--model", str(model), "--data",
                        str(tmp_path / "train.json"), "--repeats", "1", "--caps", "default", "avx2_mkl"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert [line["cap"] for line in lines] == ["default", "avx2_mkl"]
    assert lines[1]["torch_capability"] == "AVX2"
    for line in lines:
        assert set(line["min_step_s"]) == {"dropout (demo today)", "--attention_dropout 0"}
        assert all(len(v) == 1 for v in line["steps_s"].values()) and "min" in line["speedup_attention_dropout_0"]
