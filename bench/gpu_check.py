"""GPU check at the reference command's shapes, nothing downloaded: a randomly initialised BERT-base-sized encoder.

Every training step runs what `--precision auto` gives on CUDA: fp16 autocast with GradScaler and the project's fused
AdamW (dpr.training.trainer.build_optimizer), updated by the trainer's own apply_update; bf16 is reported beside it.
Batches are padded and length-sorted as the trainer's BatchBuilder makes them (attention masks and chunk orders in
play). Reports: cached vs uncached gradients on the same padded chunks (dropout on, so the cached path's replay of
the CUDA RNG is checked too) in fp16 with GradScaler and in bf16, as a relative error; seconds per grad-cache
training step (global batch 1024, 4 hard negatives, q 32 / p 384 tokens, chunks 512 / 64) in fp16 and bf16 with
peak GPU memory; cached vs uncached step time at a batch that fits both; an encoding check (256 passages through
dpr.encode on the device, half weights, fp16 and bf16, against fp32 CPU vectors: max |1 - cosine| <= 1e-3, every
row nearest its own reference row, 8 tokenizing threads bitwise equal to 1, blocks of 32 texts); corpus encoding
passages/s at p 384 through dpr.encode (start-up to the first block apart from the steady rate after it); and, when
faiss-gpu imports, flat (fp32, fp16) and IVF-PQ (trained as dense_retriever trains it: GPU k-means, then cloned
and filled) search over random 768-dim vectors through dpr.index, with recall@50 against exact fp32 search and the
GPU memory in use; resume checks (the run's CUDA seed survives --attention_dropout 0's check; fused AdamW resumes a
plain AdamW state under fp16 + GradScaler); the reranker trainer's step and scoring (train_reranker.py at
--precision auto) in pairs/s, and step 4's pair scoring (dpr.retrieval.reranker through dpr.encode.score_pairs at
the device's batch and precision, its order against fp32). A missing faiss-gpu is one line. Imports only torch,
transformers, numpy (and faiss when there). `--tiny` runs the same code at toy sizes on any machine (a smoke test
of this script; on CPU: fp32 and bf16, no GradScaler).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpr.encode import DEFAULT_BLOCK_SIZE, cast_for_inference, encode_stream, encode_texts, half_weights_dtype  # noqa: E402
from dpr.models.encoder import Encoder, EncoderSettings  # noqa: E402
from dpr.models.tokens import tokenize  # noqa: E402
from dpr.training.data import sorted_chunks  # noqa: E402
from dpr.training.grad_cache import cached_step, full_step  # noqa: E402
from dpr.training.loss import global_nll  # noqa: E402
from dpr.training.trainer import apply_update, build_optimizer, check_attention_dropout_off, load_optimizer_state  # noqa: E402
from dpr.utils.precision import autocast, dtype_name  # noqa: E402

CHARS = [chr(c) for c in range(0x4E00, 0x4E00 + 21000)]  # a Chinese-BERT-sized character vocabulary


def build_encoder(tiny: bool, device: torch.device) -> tuple[Encoder, BertTokenizerFast]:
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + CHARS)}
    tok = BertTokenizerFast(vocab=vocab, do_lower_case=False, tokenize_chinese_chars=True)
    cfg = (BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
           if tiny else BertConfig(vocab_size=len(vocab)))  # BertConfig defaults = bert-base: 768 x 12 layers
    torch.manual_seed(0)
    return Encoder(BertModel(cfg, add_pooling_layer=False), EncoderSettings(pooling="cls")).to(device), tok


def resume_checks(device: torch.device) -> dict:
    """Issue 26 items 3 and 5 on the real device: the attention-dropout check (on CPU towers, as the script runs it)
    leaves this device's generator at the run's seed; fused AdamW loads a plain AdamW state and takes an fp16
    GradScaler step (it raised an AssertionError) with `step` on the parameter's device as float32."""
    enc, _ = build_encoder(True, torch.device("cpu"))
    torch.manual_seed(1234)  # seed_everything(seed + rank)
    check_attention_dropout_off(enc)
    seed_kept = (torch.cuda.initial_seed() if device.type == "cuda" else torch.initial_seed()) == 1234
    params = [torch.nn.Parameter(torch.randn(8, 4, device=device))]
    plain = torch.optim.AdamW(params, lr=1e-3)
    params[0].grad = torch.randn(8, 4, device=device)
    plain.step()
    fused = torch.optim.AdamW(params, lr=1e-3, fused=True)
    load_optimizer_state(fused, plain.state_dict())
    scaler = torch.amp.GradScaler(device.type)
    with torch.autocast(device.type, dtype=torch.float16):
        loss = (params[0] * 2).sum()
    fused.zero_grad()
    scaler.scale(loss).backward()
    scaler.step(fused)
    scaler.update()
    step = fused.state[params[0]]["step"]
    return {"resume_checks": {"device_seed_kept_after_dropout_check": bool(seed_kept),
                              "fused_adamw_resumed_plain_state_fp16_step": True,
                              "step_on_param_device_fp32": step.device == params[0].device and step.dtype == torch.float32}}


def padded_chunks(n: int, length: int, chunk: int, vocab: int, device: torch.device, seed: int
                  ) -> tuple[list[dict], torch.Tensor | None]:
    """Token ids of lengths uniform in [length / 2, length], length-sorted into padded chunks as the trainer's
    BatchBuilder makes them (dpr.training.data.sorted_chunks), with the order (row k = text order[k])."""
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(5, vocab, size=int(k)).tolist() for k in rng.integers(max(1, length // 2), length + 1, size=n)]
    chunks, order = sorted_chunks(seqs, chunk, 0)
    pin = device.type == "cuda"
    return ([{k: v.to(device) for k, v in c.items()} for c in chunks],
            None if order is None else (order.pin_memory() if pin else order))


def time_steps(enc: Encoder, batch: int, q_len: int, p_len: int, q_chunk: int, p_chunk: int, dtype, cached: bool,
               steps: int, device: torch.device) -> dict:
    ppq = 5  # 1 positive + 4 hard negatives
    vocab = enc.model.config.vocab_size
    q_chunks, q_order = padded_chunks(batch, q_len, q_chunk if cached else batch, vocab, device, 3)
    p_chunks, p_order = padded_chunks(batch * ppq, p_len, p_chunk if cached else batch * ppq, vocab, device, 4)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    opt = build_optimizer([enc], 1e-5, 0.0, 1e-8)  # the project's (fused) AdamW
    loss_fn = partial(global_nll, passages_per_question=ppq, temperature=1.0)
    step = cached_step if cached else full_step
    enc.train()
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(steps + 1):  # the first step warms up kernels and is not counted
        seconds = optimizer_step(step, enc, enc, q_chunks, p_chunks, loss_fn, scaler, opt, list(enc.parameters()),
                                 device, dtype, q_order, p_order)
        if i:
            times.append(seconds)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"batch": batch, "dtype": dtype_name(dtype), "cached": cached, "padded": True,
            "s_per_step": round(float(np.median(times)), 3), "peak_gib": round(peak, 2)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def optimizer_step(step, q_enc, p_enc, q_chunks, p_chunks, loss_fn, scaler, opt, params, device: torch.device,
                   dtype, *order) -> float:
    """One training step as the trainer takes it (forward/backward through `step`, then the trainer's own update:
    unscale, clip at 2.0, step, one read), timed in seconds between two device syncs (gpu_bench.py times its
    steps with it too)."""
    _sync(device)
    t0 = time.perf_counter()
    loss, correct = step(q_enc, p_enc, q_chunks, p_chunks, loss_fn, lambda loss: scaler.scale(loss).backward(),
                         lambda: autocast(device, dtype), *order, read=False)
    apply_update(opt, scaler, params, 2.0, loss, correct)
    _sync(device)
    return time.perf_counter() - t0


def random_texts(n: int, p_len: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(CHARS, size=int(rng.integers(max(1, p_len // 8), p_len)))) for _ in range(n)]


def encoding_speed(enc: Encoder, tok, n: int, p_len: int, batch: int, block: int, dtype, device: torch.device) -> dict:
    """Passages/s through dpr.encode (half weights, as generate_dense_embeddings.py runs): start-up (until the first
    block is out) reported apart from the steady rate (the blocks after it)."""
    infer = Encoder(copy.deepcopy(enc.model), enc.settings)
    cast_for_inference(infer, half_weights_dtype(device, dtype))
    texts = random_texts(n, p_len, 0)
    encode_texts(infer, tok, texts[:batch], "passage", p_len, batch, device, dtype)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    first = None
    rows = 0
    for vectors in encode_stream(infer, tok, texts, "passage", p_len, batch, device, dtype, block_size=block):
        if first is None:
            first, first_rows = time.perf_counter(), len(vectors)
        rows += len(vectors)
    _sync(device)
    end = time.perf_counter()
    steady = (rows - first_rows) / (end - first) if rows > first_rows else None
    return {"passages": n, "p_len": p_len, "batch": batch, "block_size": block, "dtype": dtype_name(dtype),
            "startup_s": round(first - t0, 3), "passages_per_s": round(steady, 1) if steady else None,
            "overall_passages_per_s": round(n / (end - t0), 1)}


def encoding_check(enc: Encoder, tok, dtypes: list, device: torch.device, n: int, p_len: int) -> list[dict]:
    """`n` passages through the project's encoding path on `device` (pinned memory, tokenizing threads, half weights
    on CUDA, each of `dtypes` as autocast) against fp32 CPU vectors of the same model: max |1 - cosine| within 1e-3,
    every row nearest its own reference row, and 8 threads bitwise equal to 1 thread (blocks of 32 texts, batches of
    8). A read before the copy landed (zeros), a stale or swapped row fails it (tests/bench/test_gpu_check.py plants
    them)."""
    texts = random_texts(n, p_len, 5)
    model = copy.deepcopy(enc.model).float().cpu()
    with torch.no_grad():  # random init (std 0.02) gives every text nearly the same vector: word embeddings x25
        model.get_input_embeddings().weight.mul_(25.0)  # and mean pooling make rows differ (tell a swapped row apart)
    settings = EncoderSettings(pooling="mean")
    ref_enc = Encoder(model, settings).eval()
    with torch.no_grad():  # the reference bypasses dpr.encode: fp32 on the CPU, one batch of 32 texts at a time
        ref = np.concatenate([ref_enc(**tokenize(tok, settings.prepare(texts[s : s + 32], "passage"), p_len)).numpy()
                              for s in range(0, n, 32)])
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)  # noqa: E731
    out = []
    for dtype in dtypes:
        infer = Encoder(copy.deepcopy(model).to(device), settings)
        cast_for_inference(infer, half_weights_dtype(device, dtype))
        runs = {t: np.concatenate(list(encode_stream(infer, tok, texts, "passage", p_len, 8, device, dtype,
                                                     block_size=32, threads=t))) for t in (1, 8)}
        sims = unit(runs[8]) @ unit(ref).T
        own = np.diag(sims)
        others = np.where(np.eye(n, dtype=bool), -np.inf, sims).max(1)
        err = float(np.max(1 - own))
        matching = int(np.sum(own > others))
        equal = bool(np.array_equal(runs[1], runs[8]))
        out.append({"dtype": dtype_name(dtype), "passages": n, "weights": str(next(infer.parameters()).dtype),
                    "max_1_minus_cos": float(f"{err:.3g}"), "rows_nearest_own_reference": matching,
                    "min_margin_own_vs_other": float(f"{float(np.min(own - others)):.3g}"),
                    "threads8_equal_threads1": equal, "ok": bool(err <= 1e-3 and matching == n and equal)})
        print(json.dumps(out[-1]), flush=True)
        del infer
    return out


def reranker_scoring(tiny: bool, n: int, device: torch.device) -> dict:
    """Pair scoring (dpr.retrieval.reranker, through dpr.encode.score_pairs) with a random bert-base-sized
    cross-encoder at the reranker's shapes (question 32 + passage, 256-token pairs), the device's default batch and
    precision: pairs/s, and whether fp16 / bf16 autocast keeps the fp32 order (the head stays fp32)."""
    from transformers import BertForSequenceClassification

    from dpr.models.cross_encoder import CrossEncoder, CrossEncoderSettings
    from dpr.retrieval.reranker import Reranker

    _, tok = build_encoder(True, torch.device("cpu"))
    cfg = (BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, num_labels=1) if tiny else BertConfig(vocab_size=tok.vocab_size, num_labels=1))
    torch.manual_seed(0)
    settings = CrossEncoderSettings(max_length=24 if tiny else 256, q_max_length=8 if tiny else 32)
    ce = CrossEncoder(BertForSequenceClassification(cfg).eval(), tok, settings)
    rng = np.random.default_rng(0)
    questions = ["".join(rng.choice(CHARS, size=12)) for _ in range(n)]
    passages = ["".join(rng.choice(CHARS, size=int(rng.integers(settings.max_length // 2, settings.max_length))))
                for _ in range(n)]
    rr = Reranker(ce, "random", precision="auto", device=device)
    rr.score_pairs(questions[: rr.batch_size], passages[: rr.batch_size])  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    scores = rr.score_pairs(questions, passages)
    _sync(device)
    took = time.perf_counter() - t0
    fp32 = Reranker(ce, "random", batch_size=rr.batch_size, precision="fp32", device=device).score_pairs(
        questions[:256], passages[:256])
    top = int(np.argmax(fp32))
    return {"reranker_scoring": {"pairs": n, "max_length": settings.max_length, "batch": rr.batch_size,
                                 "amp": str(rr.amp_dtype), "pairs_per_s": round(n / took, 1),
                                 "max_abs_diff_vs_fp32": round(float(np.abs(scores[:256] - fp32).max()), 5),
                                 "same_top_as_fp32": bool(np.argmax(scores[:256]) == top)}}


def grad_agreement(enc: Encoder, dtype, device: torch.device, tiny: bool) -> dict:
    """Relative error between the cached and the uncached gradient of one step on the same chunks, dropout on."""
    batch, ppq, q_len, p_len = (8, 5, 8, 24) if tiny else (16, 5, 32, 128)
    vocab = enc.model.config.vocab_size
    q_chunks, q_order = padded_chunks(batch, q_len, 4, vocab, device, 1)  # padded, length-sorted: the attention
    p_chunks, p_order = padded_chunks(batch * ppq, p_len, 16, vocab, device, 2)  # mask and the order are exercised
    loss_fn = partial(global_nll, passages_per_question=ppq, temperature=1.0)
    scaler = torch.amp.GradScaler(device.type, init_scale=1024.0, enabled=dtype == torch.float16)
    enc.train()  # dropout on: the cached path must replay each chunk's RNG state
    grads = []
    for step in (full_step, cached_step):
        enc.zero_grad(set_to_none=True)
        torch.manual_seed(7)
        if device.type == "cuda":
            torch.cuda.manual_seed_all(7)
        step(enc, enc, q_chunks, p_chunks, loss_fn, lambda loss: scaler.scale(loss).backward(),
             lambda: autocast(device, dtype), q_order, p_order)
        scale = scaler.get_scale() if scaler.is_enabled() else 1.0
        grads.append(torch.cat([p.grad.float().flatten() / scale for p in enc.parameters() if p.grad is not None]))
    full, cached = grads
    rel = float((cached - full).norm() / full.norm().clamp_min(1e-30))
    return {"dtype": dtype_name(dtype), "dropout": True, "padded": True,
            "cached_vs_uncached_rel_err": float(f"{rel:.3g}")}


def _gpu_used_gib() -> float:
    free, total = torch.cuda.mem_get_info()
    return round((total - free) / 2**30, 2)


def faiss_gpu_search(n: int, dim: int, queries: int) -> dict:
    """Flat fp32 (the exact reference), flat fp16 and IVF-PQ through dpr.index on the GPU: recall@50, seconds,
    GPU memory in use after each build."""
    try:
        import faiss
    except ImportError as e:
        print(f"faiss-gpu check skipped: faiss is not importable here ({e})", flush=True)
        return {"faiss": f"skipped: not importable ({e})"}
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        print("faiss-gpu check skipped: this faiss build has no GPU support or sees no GPU", flush=True)
        return {"faiss": "skipped: no GPU support in this faiss build (pip install -r requirements-gpu.txt)"}
    from dpr.index.embeddings import Shard
    from dpr.index.faiss_index import IndexSpec
    from dpr.index.search import SavedIndexPolicy, build_full_index, search_index

    rng = np.random.default_rng(0)
    xb = rng.standard_normal((n, dim), dtype=np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xq = xb[rng.choice(n, queries, replace=False)] + 0.5 * rng.standard_normal((queries, dim), dtype=np.float32) / dim**0.5
    shards = [Shard(Path("random_shard0.npy"), [str(i) for i in range(n)], xb)]
    out: dict = {"vectors": n, "dim": dim, "queries": queries, "top_k": 50}
    exact = None
    nlist = max(1, int(4 * n**0.5))
    for name, spec in (("flat_fp32", IndexSpec("flat", use_gpu=True)),
                       ("flat_fp16", IndexSpec("flat", use_gpu=True, gpu_fp16=True)),
                       (f"IVF{nlist},PQ96np_nprobe64", IndexSpec("ivfpq", nlist=nlist, nprobe=64, use_gpu=True))):
        torch.cuda.empty_cache()
        base = _gpu_used_gib()
        t0 = time.perf_counter()
        built = build_full_index(shards, spec, SavedIndexPolicy(save=False))
        build_s = time.perf_counter() - t0
        used = _gpu_used_gib() - base
        t0 = time.perf_counter()
        _, rows = search_index(built.index, xq, 50)
        search_s = time.perf_counter() - t0
        if exact is None:
            exact = rows
        recall = float(np.mean([len(set(a) & set(b)) / 50 for a, b in zip(rows, exact)]))
        out[name] = {"on_gpu": built.on_gpu, "build_s": round(build_s, 2), "search_s": round(search_s, 3),
                     "recall@50_vs_flat_fp32": round(recall, 4), "gpu_gib_in_use": round(used, 2)}
        print(json.dumps({name: out[name]}), flush=True)
        del built
    return {"faiss_gpu": out}


def reranker_steps(enc: Encoder, tok: BertTokenizerFast, tiny: bool, device: torch.device, steps: int) -> dict:
    """train_reranker.py's step (RerankerTrainer.train_step at --precision auto: fp16 + GradScaler on CUDA, chunks
    sized for the device) on this encoder with a new one-logit head: 16 questions x groups of 8, full-length pairs
    (pair cap 384, question 32): training pairs/s, then scoring pairs/s, and peak GPU memory."""
    import tempfile

    from dpr.models.cross_encoder import CrossEncoderSettings, new_cross_encoder
    from dpr.training.reranker_config import RerankerConfig
    from dpr.training.reranker_data import RerankData
    from dpr.training.reranker_trainer import RerankerTrainer
    from dpr.training.trainer import DistInfo

    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_reranker."))
    enc.save_pretrained(tmp / "enc", tok)
    q_len, max_len, group, questions = (8, 32, 4, 4) if tiny else (32, 384, 8, 16)
    rng = np.random.default_rng(0)

    def text(n: int) -> str:
        return "".join(CHARS[i] for i in rng.integers(0, 3000, n))

    items = [{"question": text(q_len), "positive_ctxs": [{"text": text(max_len), "passage_id": f"p{i}"}],
              "hard_negative_ctxs": [{"text": text(max_len), "passage_id": f"n{i}-{k}"} for k in range(group)]}
             for i in range(questions * (steps + 1))]
    (tmp / "train.json").write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    ce = new_cross_encoder(str(tmp / "enc"), CrossEncoderSettings(max_len, q_len))
    ce.model.to(device)
    config = RerankerConfig(train_file=str(tmp / "train.json"), output_dir=str(tmp / "out"), batch_size=questions,
                            group_size=group, q_sequence_length=q_len, max_seq_length=max_len, warmup_steps=0)
    t = RerankerTrainer(config, ce, RerankData(tmp / "train.json"), None, device, DistInfo())
    batches = t._batches(0)
    t.train_step(batches[0], 0)  # warm-up
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for b in batches[1 : steps + 1]:
        t.train_step(b, 0)
    _sync(device)
    train_s = (time.perf_counter() - t0) / steps
    pairs = [(items[i]["question"], c["text"]) for i in range(questions)
             for c in items[i]["positive_ctxs"] + items[i]["hard_negative_ctxs"][: group - 1]]
    t0 = time.perf_counter()
    t.score([q for q, _ in pairs], [p for _, p in pairs])
    _sync(device)
    score_s = time.perf_counter() - t0
    return {"reranker_precision": t.config.precision, "pairs_per_forward": t.config.groups_per_chunk * group,
            "pair_length": max_len, "train_pairs_per_s": round(questions * group / train_s, 1),
            "score_pairs_per_s": round(len(pairs) / score_s, 1),
            "peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tiny", action="store_true", help="Toy sizes, any device: a smoke test of this script.")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--faiss_vectors", type=int, default=1_000_000)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tiny = args.tiny
    enc, tok = build_encoder(tiny, device)
    q_len, p_len = (8, 24) if tiny else (32, 384)
    report: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "torch": torch.__version__, "model": "bert-base-sized, random init" if not tiny else "tiny",
                    "training": "fp16 autocast + GradScaler + the project's fused AdamW (--precision auto on CUDA); "
                                "bf16 beside it" if device.type == "cuda" else "fp32 (CPU; bf16 beside it)"}
    dtypes = [torch.float16, torch.bfloat16] if device.type == "cuda" else [None]
    for dt in dtypes if device.type == "cuda" else [None, torch.bfloat16]:  # gradients first: the cheapest check
        r = grad_agreement(enc, dt, device, tiny)
        print(json.dumps(r), flush=True)
        report.setdefault("grad_agreement", []).append(r)
    batch = 16 if tiny else 1024
    for dt in dtypes:  # the reference command's shapes: grad cache, global batch 1024, chunks 512 / 64
        r = time_steps(enc, batch, q_len, p_len, min(512, batch), 8 if tiny else 64, dt, True, args.steps, device)
        print(json.dumps(r), flush=True)
        report.setdefault("seed_shape_steps", []).append(r)
    small = 8 if tiny else 32  # a batch whose uncached step fits in memory too
    for cached in (False, True):
        r = time_steps(enc, small, q_len, p_len, min(512, small), 8 if tiny else 64, dtypes[0], cached, args.steps, device)
        print(json.dumps(r), flush=True)
        report.setdefault("cached_vs_uncached", []).append(r)
    report["encoding_check"] = encoding_check(enc, tok, dtypes if device.type == "cuda" else [torch.bfloat16], device,
                                              64 if tiny else 256, p_len)  # the encoding path vs fp32 CPU vectors
    enc_r = encoding_speed(enc, tok, 64 if tiny else 3 * DEFAULT_BLOCK_SIZE, p_len, 16 if tiny else 512,
                           16 if tiny else DEFAULT_BLOCK_SIZE, dtypes[0], device)
    print(json.dumps(enc_r), flush=True)
    report["encoding"] = enc_r
    r = resume_checks(device)
    print(json.dumps(r), flush=True)
    report.update(r)
    rr_r = reranker_scoring(tiny, 64 if tiny else 8192, device)
    print(json.dumps(rr_r), flush=True)
    report.update(rr_r)
    rr = reranker_steps(enc, tok, tiny, device, args.steps)
    print(json.dumps(rr), flush=True)
    report["reranker"] = rr
    report.update(faiss_gpu_search(10_000 if tiny else args.faiss_vectors, 768, 100 if tiny else 2000))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
