"""FAISS index building: exact inner product (flat, the default), HNSW, IVF-PQ or any factory string; moved to the
GPU when faiss-gpu and a CUDA device are present (optionally with float16 storage)."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np

logger = logging.getLogger(__name__)

IndexType = Literal["flat", "hnsw", "ivfpq"]
INDEX_TYPES: tuple[str, ...] = ("flat", "hnsw", "ivfpq")


@dataclass
class IndexSpec:
    """What index to build and how to search it. Every index scores by inner product."""

    index_type: IndexType = "flat"
    factory: str | None = None  # any faiss.index_factory string; overrides index_type
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    nlist: int | None = None  # IVF lists; None: about 4 * sqrt(N), at most N / 39
    pq_m: int | None = None  # PQ sub-quantizers; None: dim / 8 (must divide dim)
    nprobe: int = 32
    use_gpu: bool = False
    gpu_fp16: bool = False

    def __post_init__(self) -> None:
        if self.factory is None and self.index_type not in INDEX_TYPES:
            raise ValueError(f"index_type must be one of {INDEX_TYPES}, not {self.index_type!r}")


class IndexBuildError(ValueError):
    """faiss refused an index description or its training (message from faiss, last line)."""


def gpu_available() -> bool:
    """True when this faiss build has GPU support and sees a CUDA device."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def default_nlist(n: int) -> int:
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def default_pq_m(dim: int) -> int:
    for m in (dim // 8, dim // 4, dim // 2, dim):
        if m >= 1 and dim % m == 0:
            return m
    return dim


def factory_string(spec: IndexSpec, dim: int, n: int) -> str:
    """The faiss.index_factory description for `spec` over `n` vectors of `dim`."""
    if spec.factory:
        return spec.factory
    if spec.index_type == "flat":
        return "Flat"
    if spec.index_type == "hnsw":
        return f"HNSW{spec.hnsw_m},Flat"
    pq_m = spec.pq_m or default_pq_m(dim)
    if dim % pq_m:
        raise IndexBuildError(f"--pq_m {pq_m} must divide the embedding dimension {dim}")
    nbits = 8 if n >= 256 else max(1, int(math.log2(max(n, 2))))  # a codebook needs as many training points
    bits = "" if nbits == 8 else f"x{nbits}"
    # "np": no polysemous training (a slow annealing pass whose codes only the Hamming-filter search uses)
    return f"IVF{spec.nlist or default_nlist(n)},PQ{pq_m}{bits}np"


def build_index(spec: IndexSpec, dim: int, n: int) -> faiss.Index:
    """An empty (maybe untrained) inner-product index sized for `n` vectors."""
    desc = factory_string(spec, dim, n)
    try:
        index = faiss.index_factory(dim, desc, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise IndexBuildError(f"faiss cannot build index {desc!r} for dim {dim}: {_last_line(e)}") from None
    hnsw = _hnsw(index)
    if hnsw is not None:
        hnsw.efConstruction = spec.ef_construction
    if spec.use_gpu:
        index = _to_gpu(index, spec.gpu_fp16, desc)
    return index


def train_size(index: faiss.Index, n: int) -> int:
    """How many vectors to train on (0 when the index needs no training)."""
    if index.is_trained:
        return 0
    ivf = _ivf(index)
    nlist = ivf.nlist if ivf is not None else 1
    return min(n, max(50 * nlist, 10_000))


def train_index(index: faiss.Index, vectors: np.ndarray) -> None:
    try:
        index.train(np.ascontiguousarray(vectors, dtype=np.float32))
    except RuntimeError as e:
        raise IndexBuildError(f"faiss could not train the index on {len(vectors)} vectors: {_last_line(e)}") from None


def _last_line(e: Exception) -> str:
    return str(e).strip().splitlines()[-1]


def set_search_params(index: faiss.Index, spec: IndexSpec) -> None:
    """nprobe for IVF indexes, efSearch for HNSW; nothing for flat."""
    ivf = _ivf(index)
    if ivf is not None:
        ivf.nprobe = min(spec.nprobe, ivf.nlist)
    hnsw = _hnsw(index)
    if hnsw is not None:
        hnsw.efSearch = spec.ef_search


def add_in_chunks(index: faiss.Index, vectors: np.ndarray, chunk: int = 65_536) -> None:
    """Add (memory-mapped, maybe float16) vectors as float32 one chunk at a time."""
    for start in range(0, len(vectors), chunk):
        index.add(np.ascontiguousarray(vectors[start : start + chunk], dtype=np.float32))


def _ivf(index: faiss.Index):
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _hnsw(index: faiss.Index):
    inner = faiss.downcast_index(index)
    return inner.hnsw if isinstance(inner, faiss.IndexHNSW) else None


_gpu_resources: list = []  # kept alive as long as the process, as faiss requires


def _to_gpu(index: faiss.Index, fp16: bool, desc: str) -> faiss.Index:
    if not _gpu_resources:
        _gpu_resources.append(faiss.StandardGpuResources())
    options = faiss.GpuClonerOptions()
    options.useFloat16 = fp16
    try:
        return faiss.index_cpu_to_gpu(_gpu_resources[0], 0, index, options)
    except RuntimeError as e:
        logger.warning("index %s has no GPU version (%s): searching on CPU", desc, _last_line(e))
        return index
