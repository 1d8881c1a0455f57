"""False-negative masking on a batch built from the CMRC2018 mini corpus: a question's positive reappears as another
question's hard negative (same id) and, where the collection holds a passage twice under two ids, as another
question's positive (same text). The masked loss equals the loss with those columns removed, and the gradient cache
still gives the uncached gradients."""
from __future__ import annotations

import copy
import json
import os
from collections import defaultdict
from functools import partial
from pathlib import Path

import pytest
import torch

from dpr.data.cmrc import build
from dpr.models.encoder import Encoder, EncoderSettings
from dpr.training.data import BatchBuilder, BiEncoderData, SamplingConfig, unpack_chunks
from dpr.training.grad_cache import cached_step, full_step
from dpr.training.loss import biencoder_nll
from tests.training.builders import make_model_dir, make_tokenizer

ROOT = Path(__file__).resolve().parents[2]


def _cmrc_dir() -> Path:
    return Path(os.environ.get("CMRC2018_DIR") or ROOT.parent / "shared" / "data" / "cmrc2018")


@pytest.fixture(scope="module")
def cmrc_batch_file(tmp_path_factory) -> Path:
    if not (_cmrc_dir() / "cmrc2018_dev.json").is_file():
        pytest.skip(f"CMRC2018 not found at {_cmrc_dir()} (set $CMRC2018_DIR)")
    out = tmp_path_factory.mktemp("cmrc")
    build(_cmrc_dir(), out)
    texts = {}
    with open(out / "passage_collection.json", encoding="utf-8") as f:
        for line in f:
            p = json.loads(line)
            texts[p["paragraph_id"]] = p["paragraph_text"]
    by_text = defaultdict(list)
    for pid, text in texts.items():
        by_text[text].append(pid)
    questions = [json.loads(line) for split in ("train", "dev") for line in open(out / f"{split}.json", encoding="utf-8")]
    gold = [(q, q["answer_paragraphs"][0]["paragraph_id"]) for q in questions if q.get("answer_paragraphs")]
    # a real duplicate: two ids with one text, each the positive of some question
    owner = {pid: q for q, pid in gold}
    dup = next(((a, b) for pids in by_text.values() if len(pids) > 1 for a in pids for b in pids
                if a != b and a in owner and b in owner), None)
    if dup is None:
        pytest.skip("this CMRC copy holds no duplicated gold passage")
    a, b = dup
    others, seen = [], {texts[a]}
    for q, pid in gold:  # three more questions whose gold passages are distinct from each other and from a / b
        if texts[pid] not in seen and len(others) < 3:
            seen.add(texts[pid])
            others.append((q, pid))

    def ctx(pid):
        return {"passage_id": pid, "title": "", "text": texts[pid]}

    items = [
        {"question": owner[a]["question"], "positive_ctxs": [ctx(a)], "hard_negative_ctxs": [ctx(others[0][1])]},
        # the next question's hard negative is the first question's positive (same id)
        {"question": others[1][0]["question"], "positive_ctxs": [ctx(others[1][1])], "hard_negative_ctxs": [ctx(a)]},
        # this question's positive has the first one's text under another id
        {"question": owner[b]["question"], "positive_ctxs": [ctx(b)], "hard_negative_ctxs": [ctx(others[2][1])]},
    ]
    path = out / "batch.json"
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return path


def _towers(tmp_path) -> tuple[Encoder, Encoder]:
    q = Encoder.from_pretrained(make_model_dir(tmp_path / "m", dropout=0.1))
    q.settings.normalize = True
    p = copy.deepcopy(q)
    return q.train(), p.train()


def test_cmrc_batch_masks_repeated_positives_and_equals_the_loss_without_them(cmrc_batch_file, tmp_path):
    data = BiEncoderData(cmrc_batch_file)
    builder = BatchBuilder(data, make_tokenizer(), EncoderSettings(), SamplingConfig(1, 0, False, 0), 16, 48, 2, 3)
    batch = builder(torch.arange(3).numpy(), 0)
    masked = batch["masked"]
    # question 0 (positive column 0): column 3 is question 1's negative with the same id, column 4 is question 2's
    # positive with the same text; question 2 (positive column 4) masks column 0 and column 3 (same text again)
    assert sorted(map(tuple, masked.tolist())) == [(0, 3), (0, 4), (2, 0), (2, 3)]

    q_chunks, p_chunks = unpack_chunks(batch["q"]), unpack_chunks(batch["p"])
    losses, grads = {}, {}
    for name, step in (("cached", cached_step), ("uncached", full_step)):
        torch.manual_seed(7)
        q_enc, p_enc = _towers(tmp_path / name)
        loss_fn = partial(biencoder_nll, passages_per_question=2, temperature=0.05, masked=masked)
        torch.manual_seed(11)
        losses[name], _ = step(q_enc, p_enc, q_chunks, p_chunks, loss_fn, lambda loss: loss.backward(),
                               _nullcontext, batch["q_order"], batch["p_order"])
        grads[name] = [prm.grad.clone() for m in (q_enc, p_enc) for prm in m.parameters() if prm.grad is not None]
    assert losses["cached"] == pytest.approx(losses["uncached"], rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(grads["cached"], grads["uncached"]))

    # the same representations, the loss computed by hand with the masked columns removed
    torch.manual_seed(7)
    q_enc, p_enc = _towers(tmp_path / "ref")
    q_enc.eval(), p_enc.eval()
    with torch.no_grad():
        q = torch.cat([q_enc(**c) for c in q_chunks])[torch.argsort(batch["q_order"])] \
            if batch["q_order"] is not None else torch.cat([q_enc(**c) for c in q_chunks])
        p = torch.cat([p_enc(**c) for c in p_chunks])
        p = p[torch.argsort(batch["p_order"])] if batch["p_order"] is not None else p
    scores = q @ p.T / 0.05
    drop = defaultdict(set)
    for i, j in masked.tolist():
        drop[i].add(j)
    by_hand = 0.0
    for i in range(3):
        keep = [j for j in range(6) if j not in drop[i]]
        by_hand -= torch.log_softmax(scores[i, keep], 0)[keep.index(2 * i)]
    masked_loss, _ = biencoder_nll(q, p, 2, 0.05, masked=masked)
    assert float(masked_loss) == pytest.approx(float(by_hand / 3), rel=1e-5)
    unmasked, _ = biencoder_nll(q, p, 2, 0.05)
    assert float(unmasked) != pytest.approx(float(masked_loss), rel=1e-3)


def _nullcontext():
    import contextlib

    return contextlib.nullcontext()
