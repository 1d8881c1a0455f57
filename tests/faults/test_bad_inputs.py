"""The bad-input matrix across the four steps: each bad file gives an error naming the file (and line) and what is
wrong, and leaves no output behind. Cases already tested elsewhere are listed in docs/guarantees.md, not repeated."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import dense_retriever
import generate_dense_embeddings as gen
import train_dense_encoder
from dpr.data.formats import read_passages_tsv, read_questions
from dpr.data.preprocess import Options, run
from dpr.models.loading import load_encoder_pair
from dpr.utils.io import InputError
from tests.eval.test_evaluate_script import load_script
from tests.faults.common import save_tiny_model, visible_files, write_dpr_train
from tests.tiny_encoder import random_passages, save_tiny_biencoder, write_passages_tsv

GOOD_Q = {"question_id": "q1", "question": "北京在哪", "answer_paragraphs": [{"paragraph_id": "p0000"}]}


def _jsonl(rows: list) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)


def _release(d: Path, passages: list, train: bytes | None = None, dev: bytes | None = None,
             collection: bytes | None = None) -> Path:
    d.mkdir()
    (d / "passage_collection.json").write_bytes(collection if collection is not None else _jsonl(
        [{"paragraph_id": p, "paragraph_text": t} for p, t in passages]))
    (d / "train.json").write_bytes(train if train is not None else _jsonl([GOOD_Q]))
    (d / "dev.json").write_bytes(dev if dev is not None else _jsonl([{**GOOD_Q, "question_id": "d1"}]))
    return d


PASSAGES = random_passages(5, seed=3)
COLL = _jsonl([{"paragraph_id": p, "paragraph_text": t} for p, t in PASSAGES])
RELEASE_CASES = {
    # name: (which file, its bytes, expected message)
    "truncated line": ("train.json", _jsonl([GOOD_Q]) + _jsonl([GOOD_Q])[:-20], r"train.json:2: malformed JSON line"),
    "non-UTF-8 line": ("passage_collection.json", COLL + b'{"paragraph_id": "x", "paragraph_text": "\xff\xfe"}\n',
                       r"passage_collection.json:6: not valid UTF-8"),
    "not an object": ("dev.json", b"[1, 2]\n", r"dev.json:1: malformed JSON line: expected a JSON object"),
    "missing question": ("train.json", _jsonl([{"question_id": "q1"}]), r"train.json:1: missing key 'question'"),
    "missing question_id": ("dev.json", _jsonl([{"question": "x"}]), r"dev.json:1: missing key 'question_id'"),
    "missing paragraph_text": ("passage_collection.json", COLL + _jsonl([{"paragraph_id": "x"}]),
                               r"passage_collection.json:6: expected keys 'paragraph_id' and 'paragraph_text'"),
    "answer_paragraphs not a list": ("train.json", _jsonl([{**GOOD_Q, "answer_paragraphs": "p0000"}]),
                                     r"train.json:1: answer_paragraphs must be a list"),
    "empty question": ("train.json", _jsonl([{**GOOD_Q, "question": " \t"}]), r"train.json:1: empty question"),
}


@pytest.mark.parametrize("case", list(RELEASE_CASES))
def test_preprocess_bad_release_file_names_file_line_and_writes_nothing(tmp_path, case):
    name, data, message = RELEASE_CASES[case]
    src = _release(tmp_path / "in", PASSAGES, **{name.split(".")[0].replace("passage_", ""): data})
    out = tmp_path / "out"
    with pytest.raises(InputError, match=message) as e:
        run(Options(src, out, bm25=False))
    assert e.value.path == str(src / name)
    assert visible_files(out) == [] and list(out.iterdir()) == []  # no output, no temp file


def test_preprocess_empty_and_nan_passages_are_dropped_and_counted(tmp_path):
    rows = b"".join([_jsonl([{"paragraph_id": "p0000", "paragraph_text": PASSAGES[0][1]}]),
                     b'{"paragraph_id": "n1", "paragraph_text": NaN}\n',  # a JSON NaN literal, not a string
                     _jsonl([{"paragraph_id": "n2", "paragraph_text": "  \u3000 "},
                             {"paragraph_id": "n3", "paragraph_text": "\x07\x08\x00"},  # only control characters
                             {"paragraph_id": "n4", "paragraph_text": "null"},
                             {"paragraph_id": "p0000", "paragraph_text": "duplicate id: the first is kept"}])])
    src = _release(tmp_path / "in", [], collection=rows)
    report = run(Options(src, tmp_path / "out", bm25=False))
    assert report["counts"]["passages_dropped_empty"] == 4 and report["counts"]["passages_duplicate_id"] == 1
    assert list(read_passages_tsv(tmp_path / "out" / "passages.tsv")) == [("p0000", PASSAGES[0][1], "")]


def test_preprocess_question_without_positive_is_counted_not_written(tmp_path):
    train = _jsonl([GOOD_Q, {**GOOD_Q, "question_id": "q2", "answer_paragraphs": []}])
    src = _release(tmp_path / "in", PASSAGES, train=train)
    report = run(Options(src, tmp_path / "out", bm25=False))
    assert report["counts"]["train_questions_without_positives"] == 1
    train_out = json.loads((tmp_path / "out" / "retrieval_train_data" / "dual_train.json").read_text())
    assert [q["question"] for q in train_out] == ["北京在哪"]


def test_preprocess_empty_collection_is_an_error(tmp_path):
    src = _release(tmp_path / "in", [], collection=b"")
    out = tmp_path / "out"
    with pytest.raises(InputError, match="passage_collection.json: no passages"):
        run(Options(src, out, bm25=False))
    assert visible_files(out) == []


# ----- training data -----

def _good_train(path: Path) -> bytes:
    return write_dpr_train(path, 4).read_bytes()


TRAIN_CASES = {
    "truncated file": (lambda b: b[: len(b) // 2], r"train.json:\d+: malformed JSON"),
    "non-UTF-8": (lambda b: b[:40] + b"\xff" + b[40:], r"train.json(:\d+)?: not valid UTF-8"),
    "no question has a positive": (lambda b: b"[]", r"train.json: no question with a positive passage"),
    "NaN positive text": (lambda b: json.dumps([{"question": "x", "positive_ctxs": [{"text": float("nan")}]}]).encode(),
                          r"train.json:\d+: 'positive_ctxs' must be a list of objects with a 'text' string"),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_training_bad_train_file_names_it_and_writes_no_checkpoint(tmp_path, case):
    model = save_tiny_model(tmp_path / "model")
    train = tmp_path / "train.json"
    edit, message = TRAIN_CASES[case]
    train.write_bytes(edit(_good_train(train)))
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match=message):
        train_dense_encoder.main(["--pretrained_model_cfg", str(model), "--train_file", str(train), "--output_dir",
                                  str(out), "--num_workers", "0", "--no_progress"])
    assert list(out.iterdir()) == []


# ----- questions for retrieval, the evaluator -----

QUESTION_CASES = {
    "TSV with 3 columns": ("q.tsv", "1\t北京在哪\n2\t上海\t多一列\n", r"q.tsv:2: expected 2 tab-separated columns"),
    "release line without question_id": ("q.json", '{"question": "北京"}\n', r"q.json:1: missing key 'question_id'"),
    "DPR JSON that is not a list": ("q.json", '[{"no_question": 1}]', r"q.json:1: entry 0 is not an object with a 'question'"),
    "empty file": ("q.tsv", "\n\n", r"q.tsv: no questions in this file"),
}


@pytest.mark.parametrize("case", list(QUESTION_CASES))
def test_bad_question_files_name_file_and_line(tmp_path, case):
    name, text, message = QUESTION_CASES[case]
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        read_questions(tmp_path / name)


def test_evaluator_predictions_for_other_questions_name_both_files(tmp_path):
    ref, pred = tmp_path / "dev.json", tmp_path / "pred.json"
    ref.write_text(json.dumps(GOOD_Q) + "\n")
    pred.write_text(json.dumps({"other_qid": ["p0000"]}))
    with pytest.raises(SystemExit) as e:
        load_script("evaluate_dureader").main([str(ref), str(pred)])
    assert str(pred) in str(e.value) and str(ref) in str(e.value) and "No matching QIDs" in str(e.value)


# ----- models and checkpoints of another shape -----

def test_tower_whose_weights_have_another_shape(tmp_path, capsys):
    a = save_tiny_biencoder(tmp_path / "a", hidden=32)
    b = save_tiny_biencoder(tmp_path / "b", hidden=64)
    (b / "passage_encoder" / "model.safetensors").replace(a / "passage_encoder" / "model.safetensors")
    with pytest.raises(InputError, match="passage_encoder: the weights do not fit the shapes in its config.json"):
        load_encoder_pair(a)
    ctx = write_passages_tsv(tmp_path / "p.tsv", random_passages(3))
    assert gen.main(["--model_file", str(a), "--ctx_file", str(ctx), "--out_file", str(tmp_path / "e" / "emb")]) == 2
    assert "passage_encoder: the weights do not fit" in capsys.readouterr().err
    assert list((tmp_path / "e").iterdir()) == []


def test_resume_with_a_state_that_does_not_fit_names_the_checkpoint(tmp_path):
    model = save_tiny_model(tmp_path / "model")
    train = write_dpr_train(tmp_path / "train.json", 8)
    args = ["--pretrained_model_cfg", str(model), "--train_file", str(train), "--output_dir", str(tmp_path / "out"),
            "--batch_size", "4", "--num_workers", "0", "--no_progress", "--q_sequence_length", "8",
            "--p_sequence_length", "16"]
    train_dense_encoder.main(args + ["--num_train_epochs", "1"])
    # the optimizer state holds the word embeddings; a run that freezes them has one tensor less per group
    with pytest.raises(SystemExit, match=r"dpr_biencoder.0.2: this training state does not fit the model and flags"):
        train_dense_encoder.main(args + ["--num_train_epochs", "2", "--resume", "--freeze_embeddings"])


# ----- sizes -----

@pytest.mark.parametrize("flags", ["--batch_size 0", "--batch_size -3", "--block_size 0", "--num_shards 0"])
def test_encoding_size_flags_are_checked(flags, capsys):
    with pytest.raises(SystemExit):
        gen.parse_args(shlex.split(f"--ctx_file c --out_file o {flags}"))
    assert flags.split()[0] in capsys.readouterr().err


@pytest.mark.parametrize("flags", ["--batch_size 0", "--batch_size -1", "--n_docs 0", "--search_shard_size -5"])
def test_retrieval_size_flags_are_checked(flags, capsys):
    with pytest.raises(SystemExit):
        dense_retriever.parse_args(shlex.split(f"--qa_file q --encoded_ctx_file e --out_file o {flags}"))
    assert flags.split()[0] in capsys.readouterr().err


def test_batch_smaller_than_the_chunks_is_one_chunk(tmp_path):
    """--batch_size 2 with --q_chunk_size 16 / --ctx_chunk_size 8: each batch is one chunk, same weights as no cache."""
    model = save_tiny_model(tmp_path / "model", dropout=0.0)
    train = write_dpr_train(tmp_path / "train.json", 6)
    finals = []
    for name, extra in (("cached", ["--grad_cache", "--q_chunk_size", "16", "--ctx_chunk_size", "8"]), ("plain", [])):
        out = tmp_path / name
        train_dense_encoder.main(["--pretrained_model_cfg", str(model), "--train_file", str(train), "--output_dir",
                                  str(out), "--batch_size", "2", "--num_train_epochs", "1", "--num_workers", "0",
                                  "--no_progress", "--learning_rate", "1e-3", "--warmup_steps", "0", *extra])
        finals.append(load_file(str(out / "dpr_biencoder.0.3.question_encoder" / "model.safetensors")))
    start = load_file(str(model / "model.safetensors"))
    key = "embeddings.word_embeddings.weight"
    assert not torch.equal(finals[0][key], start[key])  # it trained
    for k in finals[0]:
        np.testing.assert_allclose(finals[0][k].numpy(), finals[1][k].numpy(), atol=1e-6, err_msg=k)
