"""FAISS index building: exact inner product (flat, the default), HNSW, IVF-PQ or any factory string, on CPU or on
GPUs when faiss-gpu sees them.

The order matters at scale (8.1M x 768): an index is built and trained on the CPU (an IVF's coarse k-means runs on
the GPU through `clustering_index` when there is one), then cloned to the GPU(s) and filled there; search parameters
are set on the index actually searched (a GPU clone keeps its CPU index's nprobe, 1 when fresh). A flat index goes to
the GPU in pieces of at most `FLAT_PIECE_ROWS` vectors, each cloned once at its final size, so neither GPU nor host
memory ever holds more than the index plus one piece; `--faiss_shard` spreads the pieces (or an IVF's lists) over
every visible GPU. What faiss-gpu does in each case is read from its C++ (cited where it matters; the stand-ins in
tests/index/fake_gpu.py follow the same lines).
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import faiss
import numpy as np

logger = logging.getLogger(__name__)

IndexType = Literal["flat", "hnsw", "ivfpq"]
INDEX_TYPES: tuple[str, ...] = ("flat", "hnsw", "ivfpq")
FLAT_PIECE_ROWS = 1 << 20  # vectors per GPU flat piece: its float32 staging copy is the only memory beyond the index
ADD_CHUNK = 65_536
PQ_TRAIN_POINTS = 256 * 256  # a PQ codebook: 256 centroids x faiss's 256 points per centroid
# faiss-gpu's largest k and nprobe: GPU_MAX_SELECTION_K (faiss/gpu/utils/DeviceDefs.cuh:65), checked at search time
# by validateKSelect / validateNProbe (faiss/gpu/impl/IndexUtils.cu:28-42)
GPU_MAX_K = 2048


@dataclass(frozen=True)
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
    refine_k_factor: float | None = None  # with a refine stage (",RFlat"): re-rank k * this many candidates exactly
    use_gpu: bool = False
    gpu_fp16: bool = False
    gpu_shard: bool = False  # spread the index over every visible GPU (else GPU 0 holds it all)

    def __post_init__(self) -> None:
        if self.factory is None and self.index_type not in INDEX_TYPES:
            raise ValueError(f"index_type must be one of {INDEX_TYPES}, not {self.index_type!r}")


class IndexBuildError(ValueError):
    """faiss refused an index description, its training, or ran out of memory (message says what fits)."""


@dataclass
class BuiltIndex:
    """A searchable index and where it lives. `gpu_leaves` are the GPU indexes inside it (parameters are set on
    each); `keep` holds Python references faiss containers do not own."""

    index: faiss.Index
    desc: str
    on_gpu: bool = False
    gpu_leaves: list = field(default_factory=list)
    keep: list = field(default_factory=list)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)


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
    """An empty (maybe untrained) inner-product CPU index sized for `n` vectors."""
    desc = factory_string(spec, dim, n)
    try:
        index = faiss.index_factory(dim, desc, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise IndexBuildError(f"faiss cannot build index {desc!r} for dim {dim}: {_last_line(e)}") from None
    hnsw = _hnsw(index)
    if hnsw is not None:
        hnsw.efConstruction = spec.ef_construction
    return index


def train_size(index: faiss.Index, n: int) -> int:
    """How many vectors to train on (0 when the index needs no training): an IVF gets faiss's bound of
    `max_points_per_centroid` (256) per list, which k-means would subsample to anyway; other quantizers 65,536."""
    if index.is_trained:
        return 0
    ivf = _ivf(index)
    if ivf is None:
        return min(n, PQ_TRAIN_POINTS)
    return min(n, ivf.cp.max_points_per_centroid * ivf.nlist)


def kmeans_seconds(points: int, centroids: int, dim: int, iterations: int, flops: float) -> float:
    """Estimated seconds of k-means: each iteration scores every point against every centroid (2 flops a term)."""
    return 2.0 * iterations * points * centroids * dim / flops


_cpu_flops: list[float] = []


def cpu_flops() -> float:
    """float32 matrix-multiply speed of this CPU (flop/s), measured once on a 2048 x 768 x 4096 product."""
    if not _cpu_flops:
        a = np.random.default_rng(0).standard_normal((2048, 768), dtype=np.float32)
        b = np.random.default_rng(1).standard_normal((768, 4096), dtype=np.float32)
        a @ b
        t0 = time.perf_counter()
        a @ b
        _cpu_flops.append(2 * 2048 * 768 * 4096 / max(time.perf_counter() - t0, 1e-9))
    return _cpu_flops[0]


def train_index(index: faiss.Index, vectors: np.ndarray, spec: IndexSpec | None = None) -> None:
    """Train a CPU index. An IVF's coarse k-means runs on the GPU(s) when `spec.use_gpu` (through faiss's
    `clustering_index`); on CPU the log says how long it should take first."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    ivf = _ivf(index)
    gpu_kmeans = None
    if ivf is not None and not index.is_trained:
        if spec is not None and spec.use_gpu:
            flat = faiss.IndexFlat(ivf.d, ivf.metric_type)
            gpu_kmeans = _clone_to_gpus(flat, spec, shard=False, fp16=False)
            ivf.clustering_index = gpu_kmeans.index
            logger.info("training the %d-list coarse quantizer on %d vectors with GPU k-means", ivf.nlist, len(x))
        else:
            est = kmeans_seconds(min(len(x), ivf.cp.max_points_per_centroid * ivf.nlist), ivf.nlist, ivf.d,
                                 ivf.cp.niter, cpu_flops())
            logger.info("training the %d-list coarse quantizer on %d vectors with CPU k-means (%d iterations): "
                        "about %s at the %.0f GFLOP/s measured here", ivf.nlist, len(x), ivf.cp.niter,
                        _duration(est), cpu_flops() / 1e9)
    try:
        index.train(x)
    except RuntimeError as e:
        if is_out_of_memory(e):
            raise  # GPU k-means ran out of memory: the caller's _oom_guard gives the sizes and the flags that fit
        raise IndexBuildError(f"faiss could not train the index on {len(x)} vectors: {_last_line(e)}") from None
    finally:
        if ivf is not None:
            ivf.clustering_index = None


def _duration(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def _last_line(e: Exception) -> str:
    return str(e).strip().splitlines()[-1]


def set_search_params(built: BuiltIndex | faiss.Index, spec: IndexSpec) -> None:
    """nprobe (IVF) and efSearch (HNSW) through faiss's parameter API: GpuParameterSpace on each GPU index (which
    passes them through IndexPreTransform / IndexIDMap / IndexShards wrappers down to the GPU IVF), ParameterSpace on
    a CPU one; k_factor (refine stage) on the index itself. Only the parameters the index has are set."""
    if not isinstance(built, BuiltIndex):
        built = BuiltIndex(built, "")
    for target in built.gpu_leaves if built.on_gpu else [built.index]:
        space = faiss.GpuParameterSpace() if built.on_gpu else faiss.ParameterSpace()
        for name, value in _applicable_params(target, spec, built.on_gpu).items():
            space.set_index_parameter(target, name, value)
    if spec.refine_k_factor is not None:
        # IndexRefine.k_factor is a float (faiss/IndexRefine.h:36; the base search takes idx_t(k * k_factor)
        # candidates, IndexRefine.cpp:75-76), but ParameterSpace's "k_factor_rf" stores int(val) (AutoTune.cpp:531),
        # which made 1.5 a 1: the field is set directly
        for part in _parts(built.index):
            if isinstance(part, faiss.IndexRefine):
                part.k_factor = spec.refine_k_factor


def _applicable_params(index: faiss.Index, spec: IndexSpec, on_gpu: bool) -> dict[str, float]:
    params: dict[str, float] = {}
    nlist = _nlist(index)
    if nlist:
        params["nprobe"] = min(spec.nprobe, nlist)
    if not on_gpu and _hnsw(index) is not None:
        params["efSearch"] = spec.ef_search
    return params


def _nlist(index: faiss.Index) -> int | None:
    """The IVF lists of `index`: a CPU IVF where faiss.extract_index_ivf finds it, else a GPU IVF under any wrapper
    (extract_index_ivf does not know GPU indexes; GpuParameterSpace reaches them, GpuAutoTune.cpp:85-113 then
    AutoTune.cpp:503-528)."""
    ivf = _ivf(index)
    if ivf is not None:
        return int(ivf.nlist)
    for part in _parts(index):
        get = getattr(part, "getNumLists", None)  # GpuIndexIVF's API
        if callable(get):
            return int(get())
    return None


def _is_gpu(index) -> bool:
    gpu_index = getattr(faiss, "GpuIndex", None)
    return (gpu_index is not None and isinstance(index, gpu_index)) or type(index).__name__.startswith("Gpu")


def _parts(index: faiss.Index) -> Iterator:
    """`index` and every index inside it (downcast), through IndexPreTransform, IndexIDMap, IndexRefine (base, then
    refine index), IndexShards / IndexReplicas; a GPU index is not opened."""
    inner = faiss.downcast_index(index)
    yield inner
    if _is_gpu(inner):
        return
    if isinstance(inner, (faiss.IndexPreTransform, faiss.IndexIDMap)):
        yield from _parts(inner.index)
    elif isinstance(inner, faiss.IndexRefine):
        yield from _parts(inner.base_index)
        yield from _parts(inner.refine_index)
    elif isinstance(inner, (faiss.IndexShards, faiss.IndexReplicas)):
        for i in range(inner.count()):
            yield from _parts(inner.at(i))


def over_gpu_limits(k: int, spec: IndexSpec) -> dict[str, int]:
    """The search sizes faiss-gpu refuses at search time ({"k": k} and/or {"nprobe": n}, each above GPU_MAX_K; nprobe
    only for an IVF index)."""
    over = {}
    if k > GPU_MAX_K:
        over["k"] = k
    ivf = "IVF" in spec.factory.upper() if spec.factory else spec.index_type == "ivfpq"
    if ivf and spec.nprobe > GPU_MAX_K:
        over["nprobe"] = spec.nprobe
    return over


def add_in_chunks(index: faiss.Index, vectors: np.ndarray, chunk: int = ADD_CHUNK) -> None:
    """Add (memory-mapped, maybe float16) vectors as float32 one chunk at a time."""
    for start in range(0, len(vectors), chunk):
        index.add(np.ascontiguousarray(vectors[start : start + chunk], dtype=np.float32))


def _ivf(index: faiss.Index):
    try:
        return faiss.extract_index_ivf(index)
    except (RuntimeError, TypeError, AttributeError):
        return None


def _hnsw(index: faiss.Index):
    inner = faiss.downcast_index(index)
    return inner.hnsw if isinstance(inner, faiss.IndexHNSW) else None


# ----- GPUs -----

_gpu_resources: dict[int, object] = {}  # one per device, kept alive as long as the process, as faiss requires


def _resources(device: int):
    if device not in _gpu_resources:
        _gpu_resources[device] = faiss.StandardGpuResources()
    return _gpu_resources[device]


def gpu_devices(spec: IndexSpec) -> list[int]:
    """The GPUs an index goes on: every visible one with --faiss_shard, else GPU 0."""
    return list(range(faiss.get_num_gpus())) if spec.gpu_shard else [0]


def _cloner_options(fp16: bool):
    co = faiss.GpuClonerOptions()
    co.useFloat16 = fp16
    return co


def _clone_to_gpus(index: faiss.Index, spec: IndexSpec, shard: bool, fp16: bool) -> BuiltIndex:
    """Clone a CPU index to GPU 0, or (shard) one copy per visible GPU joined by an IndexShards that numbers rows
    by insertion order (for an empty trained IVF that is then filled through it)."""
    devices = gpu_devices(spec) if shard else [0]
    leaves = [faiss.index_cpu_to_gpu(_resources(d), d, index, _cloner_options(fp16)) for d in devices]
    if len(leaves) == 1:
        return BuiltIndex(leaves[0], "", on_gpu=True, gpu_leaves=leaves, keep=leaves)
    shards = faiss.IndexShards(index.d, True, False)
    for leaf in leaves:
        shards.add_shard(leaf)
    return BuiltIndex(shards, "", on_gpu=True, gpu_leaves=leaves, keep=leaves)


def is_out_of_memory(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, MemoryError) or any(s in text for s in ("out of memory", "alloc fail", "cudamalloc",
                                                                 "cudaerrormemoryallocation"))


def out_of_memory_message(desc: str, n: int, dim: int, spec: IndexSpec, where: str) -> str:
    """One message: what ran out, how big the index is, and the flags that make it fit."""
    gib = n * dim * 4 / 2**30
    gpus = max(1, faiss.get_num_gpus()) if spec.use_gpu else 1
    fits = []
    if is_flat_desc(desc):
        if not spec.gpu_fp16:
            fits.append(f"--faiss_fp16 (float16 storage: {gib / 2:.1f} GiB)")
        if gpus > 1 and not spec.gpu_shard:
            fits.append(f"--faiss_shard (split over the {gpus} visible GPUs: "
                        f"{gib / (2 if spec.gpu_fp16 else 1) / gpus:.1f} GiB each)")
    fits.append(f"--search_shard_size N (only N vectors at a time: N x {dim} x 4 bytes, e.g. 2000000 -> "
                f"{2_000_000 * dim * 4 / 2**30:.1f} GiB)")
    if where == "GPU":
        fits.append(f"--faiss_cpu (host RAM instead: {gib:.1f} GiB for a flat index)")
    else:
        fits.append("--index_type ivfpq (a compressed index: dim/8 bytes a vector)")
    return (f"faiss ran out of {where} memory building {desc} over {n:,} x {dim} vectors ({gib:.1f} GiB as float32"
            f"{', float16 storage' if spec.gpu_fp16 else ''}, {gpus if spec.gpu_shard else 1} GPU(s)). What fits: "
            + "; ".join(fits))


def is_flat_desc(desc: str) -> bool:
    return desc.strip().lower() in ("flat", "flatip", "flatl2")


def flat_pieces(n: int, piece_rows: int | None = None) -> list[tuple[int, int]]:
    """Row ranges [start, stop) of the GPU flat pieces (FLAT_PIECE_ROWS each by default)."""
    piece_rows = piece_rows or FLAT_PIECE_ROWS
    return [(s, min(s + piece_rows, n)) for s in range(0, n, piece_rows)]


def build_gpu_flat(dim: int, n: int, rows: Callable[[int, int], np.ndarray], spec: IndexSpec,
                   piece_rows: int | None = None) -> BuiltIndex:
    """An exact inner-product index on the GPU(s), filled piece by piece: each piece of <= piece_rows vectors is
    copied into a CPU IndexFlatIP and cloned once (its exact final size, float16 when asked), so GPU memory holds
    the index plus one piece's staging copy. Pieces go to GPU 0, or round-robin-contiguously over every GPU with
    --faiss_shard; an IndexShards in row order joins them (results carry global row numbers)."""
    pieces = flat_pieces(n, piece_rows)
    devices = gpu_devices(spec)
    per_device: dict[int, list] = {d: [] for d in devices}
    leaves, keep = [], []
    for i, (start, stop) in enumerate(pieces):
        device = devices[i * len(devices) // len(pieces)]  # contiguous runs of pieces per device, in row order
        cpu = faiss.IndexFlatIP(dim)
        add_in_chunks(cpu, rows(start, stop))
        gpu = faiss.index_cpu_to_gpu(_resources(device), device, cpu, _cloner_options(spec.gpu_fp16))
        del cpu
        per_device[device].append(gpu)
        leaves.append(gpu)
    top = faiss.IndexShards(dim, len(devices) > 1, True)  # threads only across devices (one resource each)
    for d in devices:
        group = per_device[d]
        if not group:
            continue
        if len(group) == 1:
            top.add_shard(group[0])
        else:
            inner = faiss.IndexShards(dim, False, True)
            for g in group:
                inner.add_shard(g)
            inner.syncWithSubIndexes()
            keep.append(inner)
            top.add_shard(inner)
    top.syncWithSubIndexes()
    keep.extend(leaves)
    return BuiltIndex(top, "Flat", on_gpu=True, gpu_leaves=leaves, keep=keep)


def to_gpu(index: faiss.Index, spec: IndexSpec, desc: str) -> BuiltIndex:
    """A filled or empty-trained CPU index on the GPU(s). HNSW, a refine stage and others without a GPU version stay
    on CPU (one log line): faiss's one-GPU cloner throws for them (GpuCloner.cpp:246-253); its multi-GPU cloner
    copies HNSW to the CPU and would put a refine stage's flat copy in GPU shards, which IndexRefineFlat::search
    refuses (IndexRefine.cpp:326-327)."""
    if not spec.use_gpu:
        return BuiltIndex(index, desc)
    if _hnsw(index) is not None or any(isinstance(p, faiss.IndexRefine) for p in _parts(index)):
        logger.info("index %s has no GPU version in faiss: searching on CPU", desc)
        return BuiltIndex(index, desc)
    try:
        if spec.gpu_shard and index.ntotal > 0 and len(gpu_devices(spec)) > 1:  # a saved IVF: faiss splits it
            co = faiss.GpuMultipleClonerOptions()
            co.shard = True
            # float16 lookup tables as on the first build: without them faiss throws for M > 48 inside the OpenMP
            # loop that clones the shards (GpuCloner.cpp:360-381), which aborts the process
            co.useFloat16 = spec.gpu_fp16 or _needs_fp16_tables(index)
            gpu = faiss.index_cpu_to_all_gpus(index, co)
            if not any(_is_gpu(p) for p in _parts(gpu)):  # faiss copied it to the CPU (GpuCloner.cpp:486-487)
                logger.info("index %s has no GPU version in faiss: searching on CPU", desc)
                return BuiltIndex(index, desc)
            # the result may be a CPU IndexPreTransform around GPU shards (OPQ, PCA): parameters reach the GPU IVFs
            # through it (set_search_params)
            return BuiltIndex(gpu, desc, on_gpu=True, gpu_leaves=[gpu], keep=[gpu])
        built = _clone_to_gpus(index, spec, shard=spec.gpu_shard, fp16=spec.gpu_fp16 or _needs_fp16_tables(index))
        built.desc = desc
        return built
    except RuntimeError as e:
        if is_out_of_memory(e):
            raise
        logger.warning("index %s has no GPU version here (%s): searching on CPU", desc, _last_line(e))
        return BuiltIndex(index, desc)


def _needs_fp16_tables(index: faiss.Index) -> bool:
    """GPU IVF-PQ with more than 48 sub-quantizers only fits shared memory with float16 lookup tables."""
    inner = faiss.downcast_index(_ivf(index)) if _ivf(index) is not None else None
    return isinstance(inner, faiss.IndexIVFPQ) and inner.pq.M > 48


def to_cpu(built: BuiltIndex) -> faiss.Index:
    """A CPU copy of a built index (for write_index): GPU shards of an IVF are merged into one."""
    if not built.on_gpu:
        return built.index
    cpus = [faiss.index_gpu_to_cpu(leaf) for leaf in built.gpu_leaves]
    first = cpus[0]
    for other in cpus[1:]:
        _ivf(first).merge_from(_ivf(other), 0)  # add_id 0: rows keep the global numbers they were added with
    return first


def iter_chunks(n: int, chunk: int = ADD_CHUNK) -> Iterator[tuple[int, int]]:
    for s in range(0, n, chunk):
        yield s, min(s + chunk, n)
