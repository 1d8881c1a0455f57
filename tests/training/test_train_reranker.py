"""train_reranker.py on tiny random models: it learns a planted signal, resumes exactly, its flags do what they say,
its negatives obey the exclusion rule, bad input is one error line, and torchrun splits the batch exactly."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import train_reranker
from dpr.models.cross_encoder import (
    CrossEncoderSettings,
    load_cross_encoder,
    new_cross_encoder,
    pair_logits,
    tokenize_pairs,
)
from dpr.training.reranker_data import RerankData, dev_candidates, first_relevant_rank, mrr_at_k
from dpr.training.reranker_trainer import RerankerTrainer
from dpr.utils.io import InputError
from tests.training.reranker_builders import MARKER, make_planted_json, planted_passage, text

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("planted")
    return make_planted_json(d / "train.json", 32, seed=1), make_planted_json(d / "dev.json", 16, seed=2)


def args(model: Path, train: Path, out: Path, *extra: str, dev: Path | None = None) -> list[str]:
    base = ["--pretrained_model_cfg", str(model), "--train_file", str(train), "--output_dir", str(out),
            "--batch_size", "8", "--group_size", "4", "--max_seq_length", "64", "--learning_rate", "3e-3",
            "--warmup_steps", "0", "--num_train_epochs", "2", "--no_progress", "--log_batch_step", "1"]
    return base + (["--dev_file", str(dev)] if dev else []) + list(extra)


def log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def weights(reranker_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(reranker_dir / "model.safetensors"))


def mrr(ce, dev: Path) -> float:
    cands = dev_candidates(RerankData(dev), 50)
    ranks = []
    for q, ps, rel in zip(cands.questions, cands.passages, cands.relevant):
        with torch.no_grad():
            scores = pair_logits(ce.model.eval(), tokenize_pairs(ce, [q] * len(ps), ps)).tolist()
        ranks.append(first_relevant_rank(scores, rel))
    return mrr_at_k(ranks)


def test_a_reranker_learns_the_planted_signal(tiny_model_dir_no_dropout, planted, tmp_path):
    train, dev = planted
    torch.manual_seed(0)  # the script seeds the new head the same way
    untrained = mrr(new_cross_encoder(str(tiny_model_dir_no_dropout), CrossEncoderSettings(64, 32)), dev)
    best = train_reranker.main(args(tiny_model_dir_no_dropout, train, tmp_path / "out", dev=dev))
    assert best["metric"] == "mrr@10" and best["value"] == 1.0 > untrained
    ce = load_cross_encoder(best["reranker"])
    assert mrr(ce, dev) == 1.0
    rng = random.Random(9)  # fresh questions: the planted passage is put first among 7 plain ones
    for _ in range(5):
        passages = [text(rng, 8, 33) for _ in range(7)] + [planted_passage(rng)]
        scores = pair_logits(ce.model, tokenize_pairs(ce, [text(rng, 3, 10)] * 8, passages))
        assert int(scores.argmax()) == 7 and MARKER in passages[7]
    losses = [r["loss"] for r in log(tmp_path / "out") if r["type"] == "step"]
    assert losses[-1] < losses[0]


def test_the_trained_directory_scores_the_same_in_sentence_transformers(tiny_model_dir_no_dropout, planted,
                                                                        tmp_path):
    st = pytest.importorskip("sentence_transformers")
    train, dev = planted
    best = train_reranker.main(args(tiny_model_dir_no_dropout, train, tmp_path / "out", "--num_train_epochs", "1",
                                    dev=dev))
    ours = load_cross_encoder(best["reranker"])
    cands = dev_candidates(RerankData(dev), 50)
    q, ps = cands.questions[0], cands.passages[0]
    with torch.no_grad():
        logits = pair_logits(ours.model, tokenize_pairs(ours, [q] * len(ps), ps))
    predicted = torch.as_tensor(st.CrossEncoder(best["reranker"], device="cpu").predict([(q, p) for p in ps]))
    assert torch.allclose(predicted.float(), torch.sigmoid(logits), atol=1e-5)
    assert predicted.argsort().tolist() == logits.argsort().tolist()


def test_resume_after_a_kill_equals_the_uninterrupted_run(tiny_model_dir, planted, tmp_path, monkeypatch):
    train, dev = planted
    flags = ["--save_every_steps", "2", "--eval_every_steps", "3"]  # dropout on: the RNG state must come back too
    train_reranker.main(args(tiny_model_dir, train, tmp_path / "a", *flags, dev=dev))

    real_step, calls = RerankerTrainer.train_step, []

    def dies_at_step_7(self, batch, epoch):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt  # a kill after checkpoint 1.2 (step 6)
        return real_step(self, batch, epoch)

    monkeypatch.setattr(RerankerTrainer, "train_step", dies_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        train_reranker.main(args(tiny_model_dir, train, tmp_path / "b", *flags, dev=dev))
    monkeypatch.setattr(RerankerTrainer, "train_step", real_step)
    train_reranker.main(args(tiny_model_dir, train, tmp_path / "b", *flags, "--resume", dev=dev))
    a, b = weights(tmp_path / "a" / "dpr_reranker.1.4.reranker"), weights(tmp_path / "b" / "dpr_reranker.1.4.reranker")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = [{k: v for k, v in r.items() if k != "pairs_per_s"} for r in log(tmp_path / "a")]
    assert strip == [{k: v for k, v in r.items() if k != "pairs_per_s"} for r in log(tmp_path / "b")]
    assert json.loads((tmp_path / "a" / "best_checkpoint.json").read_text())["value"] == \
        json.loads((tmp_path / "b" / "best_checkpoint.json").read_text())["value"]


def test_chunks_of_whole_groups_give_the_same_gradients(tiny_model_dir_no_dropout, planted, tmp_path, monkeypatch):
    from dpr.training import reranker_trainer
    from dpr.training.reranker_config import RerankerConfig
    from dpr.training.trainer import DistInfo

    train, _ = planted
    data = RerankData(train)
    grads = {}
    for chunk in (4, 12, 32):  # 1 group per forward, 3 groups (a short last chunk), the whole batch
        torch.manual_seed(0)
        ce = new_cross_encoder(str(tiny_model_dir_no_dropout), CrossEncoderSettings(64, 32))
        config = RerankerConfig(train_file=str(train), output_dir=str(tmp_path / "o"), batch_size=8, group_size=4,
                                ctx_chunk_size=chunk, precision="fp32")
        trainer = RerankerTrainer(config, ce, data, None, torch.device("cpu"), DistInfo())
        monkeypatch.setattr(reranker_trainer, "sync_gradients",
                            lambda params, c=chunk: grads.__setitem__(c, [p.grad.clone() for p in params]))
        trainer.train_step(trainer._batches(0)[0], 0)
    for chunk in (12, 32):
        assert all(torch.allclose(a, b, atol=1e-7, rtol=1e-5) for a, b in zip(grads[4], grads[chunk]))
    assert any(float(g.abs().max()) > 1e-4 for g in grads[4])  # not all zero


def test_group_size_sets_the_passages_per_question(tiny_model_dir_no_dropout, planted, tmp_path):
    train, _ = planted
    data = RerankData(train)
    for g in (2, 6, 9):  # 9: beyond the 5 listed negatives, random passages of the file fill the group
        groups = [data.group(i, g, np.random.default_rng([0, 0, i])) for i in range(len(data))]
        assert {len(x) for x in groups} == {g}
        assert all(x[0] == data.positives[i][0] and x[0] not in x[1:] for i, x in enumerate(groups))
        if g <= 6:  # the listed negatives suffice: all of them plain
            assert not any(MARKER in data.passages[j] for x in groups for j in x[1:])
        else:  # random passages of the file (other questions' positives among them) fill the rest
            assert all(set(x[1:6]) == set(data.hard[i].tolist()) for i, x in enumerate(groups))
            assert len({j for x in groups for j in x[6:]}) > 10


def test_pair_flags_are_recorded_and_used(tiny_model_dir_no_dropout, planted, tmp_path):
    train, _ = planted
    train_reranker.main(args(tiny_model_dir_no_dropout, train, tmp_path / "out", "--num_train_epochs", "1",
                             "--max_seq_length", "20", "--q_sequence_length", "5", "--do_lower_case"))
    out = tmp_path / "out" / "dpr_reranker.0.4.reranker"
    info = json.loads((out / "dpr_reranker.json").read_text())
    assert info["settings"] == {"max_length": 20, "q_max_length": 5, "do_lower_case": True}
    assert info["group_size"] == 4 and info["trained_by"] == "train_reranker.py"
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == 20
    ce = load_cross_encoder(out)
    batch = tokenize_pairs(ce, ["的一是不了人我在有他"], ["的" * 50])
    assert batch["input_ids"].shape == (1, 20) and int((batch["token_type_ids"][0] == 0).sum()) == 5 + 2


def test_dev_candidates_and_eval_steps_change_validation(tiny_model_dir_no_dropout, planted, tmp_path):
    train, dev = planted
    train_reranker.main(args(tiny_model_dir_no_dropout, train, tmp_path / "out", "--num_train_epochs", "1",
                             "--dev_candidates", "3", "--eval_every_steps", "1", dev=dev))
    vals = [r for r in log(tmp_path / "out") if r["type"] == "validation"]
    assert [r["step"] for r in vals] == [1, 2, 3, 4] and [r["end_of_epoch"] for r in vals] == [False] * 3 + [True]
    assert all(r["pairs"] == 3 * 16 for r in vals)


def test_keep_checkpoints_and_freeze_embeddings(tiny_model_dir_no_dropout, planted, tmp_path):
    train, dev = planted
    out = tmp_path / "out"
    train_reranker.main(args(tiny_model_dir_no_dropout, train, out, "--save_every_steps", "1",
                             "--keep_checkpoints", "1", "--freeze_embeddings", dev=dev))
    best = json.loads((out / "best_checkpoint.json").read_text())
    kept = sorted(p.name for p in out.glob("dpr_reranker.*") if not p.name.endswith(".reranker"))
    assert kept == sorted({"dpr_reranker.1.4", Path(best["checkpoint"]).name})
    start = load_cross_encoder(out / "dpr_reranker.1.4.reranker").model
    fresh = new_cross_encoder(str(tiny_model_dir_no_dropout), CrossEncoderSettings(64, 32)).model
    emb = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(start.state_dict()[emb], fresh.state_dict()[emb])
    layer = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(start.state_dict()[layer], fresh.state_dict()[layer])


def test_model_file_continues_from_a_reranker_with_its_head(tiny_model_dir_no_dropout, planted, tmp_path):
    train, dev = planted
    train_reranker.main(args(tiny_model_dir_no_dropout, train, tmp_path / "a", "--num_train_epochs", "1"))
    first = tmp_path / "a" / "dpr_reranker.0.4.reranker"
    best = train_reranker.main(args(tiny_model_dir_no_dropout, train, tmp_path / "b", "--model_file", str(first),
                                    "--learning_rate", "1e-9", "--num_train_epochs", "1", dev=dev))
    before, after = weights(first), weights(Path(best["reranker"]))
    assert all(torch.allclose(before[k], after[k], atol=1e-5) for k in before)  # the head came along, not a new one


# ---------------------------------------------------------------- negatives and the exclusion rule

def entry(question: str, positives: list[tuple[str, str]], hard: list[tuple[str, str]]) -> dict:
    return {"question": question,
            "positive_ctxs": [{"passage_id": p, "text": t, "title": ""} for p, t in positives],
            "hard_negative_ctxs": [{"passage_id": p, "text": t, "title": ""} for p, t in hard]}


def write(path: Path, items: list[dict]) -> Path:
    path.write_text(json.dumps(items, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def test_negatives_never_include_a_positive_or_a_sibling(tmp_path):
    items = [entry("问一", [("7-0", "正文")], [("7-0", "同一个编号"), ("x", "正文"), ("7-1", "同段落"), ("8-0", "别的")]),
             entry("问二", [("9-0", "第二正文")], [("9-3", "同段落二"), ("10-0", "第二别的")])]
    path = write(tmp_path / "t.json", items)
    plain, sib = RerankData(path), RerankData(path, sibling_ids=True)
    assert plain.rejected_negatives == 2 and sib.rejected_negatives == 4
    banned = {False: [{"7-0", "x"}, {"9-0"}], True: [{"7-0", "x", "7-1"}, {"9-0", "9-3"}]}
    for data in (plain, sib):
        for seed in range(20):  # groups larger than the pools: random fillers are drawn too
            for i in range(2):
                group = data.group(i, 4, np.random.default_rng([seed, 0, i]))
                negatives = {data.pids[j] for j in group[1:]}
                assert not negatives & banned[data.sibling_ids][i], (seed, i, negatives)
                assert data.pids[group[0]] in {"7-0", "9-0"} and len(negatives) == 3
        texts = {data.passages[j] for seed in range(20) for j in data.group(0, 4, np.random.default_rng(seed))[1:]}
        assert "正文" not in texts and ("同段落" in texts) != data.sibling_ids


def test_the_sibling_rule_from_collection_meta(tiny_model_dir_no_dropout, tmp_path):
    """Every listed negative is a sibling: with the rule on (collection_meta.json beside --ctx_file) a group of 8
    cannot be filled from this small file (one error line), without it training runs."""
    items = [entry(f"问{i}", [(f"{i}-0", f"正文{i}")], [(f"{i}-{k}", f"同段{i}{k}") for k in range(1, 4)])
             for i in range(4)]
    train = write(tmp_path / "t.json", items)
    (tmp_path / "coll").mkdir()
    (tmp_path / "coll" / "collection_meta.json").write_text('{"id_scheme": "paragraph-k"}')
    (tmp_path / "coll" / "passages.tsv").write_text("id\ttext\ttitle\n")
    common = args(tiny_model_dir_no_dropout, train, tmp_path / "out", "--batch_size", "2", "--group_size", "8",
                  "--num_train_epochs", "1")
    with pytest.raises(SystemExit) as e:
        train_reranker.main(common + ["--ctx_file", str(tmp_path / "coll" / "passages.tsv")])
    assert e.value.code == 2
    assert not (tmp_path / "out" / "train_log.jsonl").exists()
    train_reranker.main(common + ["--overwrite_output_dir"])
    assert (tmp_path / "out" / "dpr_reranker.0.2.reranker").is_dir()


def test_fillers_refuse_when_only_positives_and_siblings_remain(tmp_path):
    path = write(tmp_path / "t.json", [entry("问", [("1-0", "甲")], [("1-1", "乙")])])
    with pytest.raises(InputError, match="may be its negatives"):
        RerankData(path, sibling_ids=True).group(0, 2, None)


# ---------------------------------------------------------------- bad input

def run_script(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train_reranker.py"), *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_bad_input_is_one_error_line_and_nothing_written(tiny_model_dir_no_dropout, planted, tmp_path):
    train, _ = planted
    bad = tmp_path / "bad.json"
    bad.write_text('[\n{"question": "问", "positive_ctxs": [{"text": "甲"}]},\n{"question": 3}\n]', encoding="utf-8")
    nodev = write(tmp_path / "nodev.json", [entry("问", [("1", "甲")], [])])
    cases = [(["--train_file", str(bad)], rf"^error: {bad}:3: "),
             (["--train_file", str(train), "--dev_file", str(nodev)], r"^error: --dev_file .*no question has a negative"),
             (["--train_file", str(train), "--max_seq_length", "10"], r"^error: --max_seq_length 10 leaves no room")]
    for extra, pattern in cases:
        out = tmp_path / "out"
        proc = run_script("--pretrained_model_cfg", str(tiny_model_dir_no_dropout), "--output_dir", str(out),
                          "--no_progress", *extra)
        assert proc.returncode == 2, proc.stderr[-2000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and __import__("re").match(pattern, errors[0]), proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and not out.exists()


# ---------------------------------------------------------------- torchrun

def test_two_ranks_train_the_same_model_as_one_process(tiny_model_dir_no_dropout, planted, tmp_path):
    train, _ = planted
    common = args(tiny_model_dir_no_dropout, train, tmp_path / "x", "--num_train_epochs", "1", "--batch_size", "5",
                  "--max_train_questions", "10", "--adam_eps", "1e-4",  # 2 steps; eps: no sign walk of ~0 gradients
                  "--precision", "fp32")  # 5 questions: ranks take 3 + 2
    one = [a if a != str(tmp_path / "x") else str(tmp_path / "one") for a in common]
    two = [a if a != str(tmp_path / "x") else str(tmp_path / "two") for a in common]
    train_reranker.main(one)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(ROOT / "train_reranker.py"), *two], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    name = "dpr_reranker.0.2.reranker"
    a, b = weights(tmp_path / "one" / name), weights(tmp_path / "two" / name)
    start = weights(tiny_model_dir_no_dropout)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    shared = [k for k in start if "bert." + k in a]
    assert shared and any(not torch.allclose(a["bert." + k], start[k], atol=1e-4) for k in shared)  # it trained


def test_dev_run_gives_negatives_to_a_dev_file_without_them(tiny_model_dir_no_dropout, planted, tmp_path):
    """A dev file without hard negatives + a first-stage run (the positive at rank 1, then the listed negatives)
    validates exactly as the dev file with those negatives does."""
    train, dev = planted
    items = json.loads(dev.read_text())
    lines = [json.dumps({"question_id": it["question_id"], "question": it["question"],
                         "passages": [{"rank": r, "passage_id": c["passage_id"], "score": 0.0, "text": c["text"],
                                       "title": ""}
                                      for r, c in enumerate(it["positive_ctxs"] + it["hard_negative_ctxs"], 1)]},
                        ensure_ascii=False) for it in items]
    run = tmp_path / "dev.rerank.jsonl"
    run.write_text("\n".join(lines) + "\n", encoding="utf-8")
    bare = write(tmp_path / "bare.json", [{**it, "hard_negative_ctxs": []} for it in items])
    common = ["--num_train_epochs", "1", "--dev_candidates", "4"]
    train_reranker.main(args(tiny_model_dir_no_dropout, train, tmp_path / "a", *common, dev=dev))
    train_reranker.main(args(tiny_model_dir_no_dropout, train, tmp_path / "b", *common, "--dev_run", str(run),
                             dev=bare))
    va, vb = ([r for r in log(tmp_path / x) if r["type"] == "validation"] for x in "ab")
    # --dev_candidates 4 cuts the run at its top 4 (positive + 3 negatives) and the listed candidates at 4
    assert va == vb and va[0]["pairs"] == 4 * 16
    textless = tmp_path / "textless.jsonl"
    textless.write_text('{"question_id": "0", "passages": [{"passage_id": "p"}]}\n', encoding="utf-8")
    proc = run_script("--pretrained_model_cfg", str(tiny_model_dir_no_dropout), "--output_dir", str(tmp_path / "c"),
                      "--train_file", str(train), "--dev_file", str(bare), "--dev_run", str(textless))
    assert proc.returncode == 2 and f"error: {textless}:1: a passage without its text" in proc.stderr
    assert not (tmp_path / "c").exists()


def test_the_fp16_gradscaler_path_with_a_cpu_stand_in(tiny_model_dir_no_dropout, planted, tmp_path):
    """CUDA's --precision auto is fp16 + GradScaler; here fp16 autocast and an enabled GradScaler on CPU stand in: a
    step with finite gradients updates, a step whose gradients overflow is skipped (no update, no schedule step, the
    scale halves). bench/gpu_check.py runs the real thing on a GPU."""
    from dpr.training.reranker_config import RerankerConfig
    from dpr.training.trainer import DistInfo

    train, _ = planted
    torch.manual_seed(0)
    ce = new_cross_encoder(str(tiny_model_dir_no_dropout), CrossEncoderSettings(64, 32))
    config = RerankerConfig(train_file=str(train), output_dir=str(tmp_path), batch_size=8, group_size=4,
                            warmup_steps=0, learning_rate=1e-3)
    t = RerankerTrainer(config, ce, RerankData(train), None, torch.device("cpu"), DistInfo())
    t.amp_dtype, t.scaler = torch.float16, torch.amp.GradScaler("cpu", enabled=True, init_scale=2.0 ** 10)
    before = {k: v.clone() for k, v in ce.model.state_dict().items()}
    loss, _, skipped, _ = t.train_step(t._batches(0)[0], 0)
    assert not skipped and np.isfinite(loss) and t.scheduler.last_epoch == 1
    assert any(not torch.equal(before[k], v) for k, v in ce.model.state_dict().items())
    t.scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=2.0 ** 127)  # scaled gradients overflow
    after_one = {k: v.clone() for k, v in ce.model.state_dict().items()}
    _, _, skipped, _ = t.train_step(t._batches(0)[1], 0)
    assert skipped and t.scheduler.last_epoch == 1 and t.scaler.get_scale() < 2.0 ** 127
    assert all(torch.equal(after_one[k], v) for k, v in ce.model.state_dict().items())


def test_schedule_and_seed_flags(tiny_model_dir_no_dropout, planted, tmp_path):
    train, _ = planted
    for name, extra in (("a", ["--warmup_steps", "2", "--learning_rate", "1e-3"]), ("b", ["--seed", "3"])):
        train_reranker.main(args(tiny_model_dir_no_dropout, train, tmp_path / name, "--num_train_epochs", "1",
                                 *extra))
    lrs = [r["lr"] for r in log(tmp_path / "a") if r["type"] == "step"]
    assert lrs == pytest.approx([5e-4, 1e-3, 5e-4, 0.0])  # the lr after each step: warmup 2, then linear decay
    a, b = weights(tmp_path / "a" / "dpr_reranker.0.4.reranker"), weights(tmp_path / "b" / "dpr_reranker.0.4.reranker")
    assert not torch.equal(a["classifier.weight"], b["classifier.weight"])  # another seed: another new head


def test_the_best_record_follows_its_checkpoint_and_nothing_is_deleted_before_loading(
        tiny_model_dir_no_dropout, planted, tmp_path, monkeypatch):
    """Step 2's seams, for the reranker: best_checkpoint.json is written only once the checkpoint it names is
    complete; a fresh run whose --model_file lies among the files it would delete is refused before deleting; a
    --resume without a complete checkpoint removes that start's leftovers and starts fresh."""
    from dpr.training import checkpoint as ckpt

    train, dev = planted
    out = tmp_path / "out"
    real_save = ckpt.save_checkpoint_dirs

    def killed_while_saving(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_checkpoint_dirs", killed_while_saving)
    with pytest.raises(KeyboardInterrupt):  # validated (a new best), killed before its checkpoint
        train_reranker.main(args(tiny_model_dir_no_dropout, train, out, "--num_train_epochs", "1", dev=dev))
    assert not (out / "best_checkpoint.json").exists()
    monkeypatch.setattr(ckpt, "save_checkpoint_dirs", real_save)
    (out / ".dpr_reranker.0.4.reranker.x.tmp").mkdir()  # what a killed save leaves
    best = train_reranker.main(args(tiny_model_dir_no_dropout, train, out, "--num_train_epochs", "1", "--resume",
                                    dev=dev))
    assert not (out / ".dpr_reranker.0.4.reranker.x.tmp").exists()
    assert json.loads((out / "best_checkpoint.json").read_text()) == best
    with pytest.raises(SystemExit) as e:
        train_reranker.main(args(tiny_model_dir_no_dropout, train, out, "--overwrite_output_dir", "--model_file",
                                 best["reranker"]))
    assert e.value.code == 2 and Path(best["reranker"]).is_dir()
