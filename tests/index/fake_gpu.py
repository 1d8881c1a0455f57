"""A stand-in for faiss-gpu on a CPU build, written from faiss's C++ (facebookresearch/faiss at 02dbb4e, paths under
faiss/): each stand-in does what the C++ does for the index kinds this project builds, fails where it fails, and
records every call.

- `index_cpu_to_gpu` is ToGpuCloner::clone_Index (gpu/GpuCloner.cpp:139-255): a flat or IVF index becomes a "GPU
  index" (the CPU clone inside a container faiss.extract_index_ivf cannot open, as it cannot open a GpuIndexIVF);
  IndexPreTransform / IndexIDMap are copied on the CPU around a GPU clone of what they wrap (:246-252); anything else
  (HNSW, IndexRefine) throws "This index type is not implemented on GPU." (:253). A GPU IVF takes the CPU index's
  nprobe (gpu/GpuIndexIVF.cu:158-159); a GPU IVF-PQ refuses lookup tables larger than the 48 KiB of shared memory a
  block gets (4 bytes a float32 entry, 2 a float16 one, x M x 2^nbits: gpu/GpuIndexIVFPQ.cu:594-620).
- `index_cpu_to_all_gpus` is ToGpuClonerMultiple::clone_Index (gpu/GpuCloner.cpp:440-489): flat / IVF kinds are
  sharded (shard=True) into an IndexShards, or replicated; the shards are cloned inside `#pragma omp parallel for`
  (:360-415), where an exception escapes the OpenMP region and terminates the process: raised here as
  `ProcessAborted`, a BaseException nothing in the code under test may catch. Other kinds go to the CPU Cloner
  (:487, clone_index.cpp:280-398), whose recursion comes back here: HNSW is copied to the CPU (:338-343),
  IndexPreTransform is a CPU wrapper around GPU shards (:316-331), IndexRefine a CPU wrapper around GPU shards of
  both its base and its refine index (:369-378).
- `GpuParameterSpace.set_index_parameter` is gpu/GpuAutoTune.cpp:81-114 falling back to ParameterSpace
  (AutoTune.cpp:491-628): nprobe is set on a GPU IVF, reached through IndexPreTransform / IndexIDMap / IndexShards /
  IndexReplicas / IndexRefine's base; "k_factor_rf" stores int(val) (AutoTune.cpp:531); a name that applies to
  nothing throws.
- A GPU index's search refuses k or nprobe above 2048 (validateKSelect / validateNProbe, gpu/impl/IndexUtils.cu:28-42,
  GPU_MAX_SELECTION_K in gpu/utils/DeviceDefs.cuh:65) — for a GPU index searched from Python (the container's own
  C++ search does not come back here).
- `kmeans_oom=True`: the GPU k-means of an IVF's training runs out of memory, as StandardGpuResources' allocator
  reports it (gpu/StandardGpuResources.cpp:566-576: "alloc fail ... (cudaMalloc error out of memory [2])").
"""
from __future__ import annotations

import faiss
import numpy as np

GPU_MAX_SELECTION_K = 2048
SHARED_MEM_PER_BLOCK = 48 * 1024
OOM = ("Error in void* faiss::gpu::StandardGpuResourcesImpl::allocMemory(const faiss::gpu::AllocRequest&) at "
       "faiss/gpu/StandardGpuResources.cpp:576: Error: 'err == cudaSuccess' failed: StandardGpuResources: alloc fail "
       "type TemporaryMemoryBuffer dev 0 space Device stream 0x0 size 8589934592 bytes (cudaMalloc error out of "
       "memory [2])")


class ProcessAborted(BaseException):
    """What a C++ exception escaping an OpenMP parallel region does: std::terminate, the process ends."""


class FakeGpuIndex(faiss.IndexShards):
    """What the stand-in cloner returns: the CPU clone inside a container extract_index_ivf cannot open."""

    inner = None
    refs = None

    def search(self, x, k, *args, **kwargs):
        if not 0 < k <= GPU_MAX_SELECTION_K:  # gpu/impl/IndexUtils.cu:28-34
            raise RuntimeError(f"Error in void faiss::gpu::validateKSelect(int, bool): GPU index only supports "
                               f"min/max-K selection up to {GPU_MAX_SELECTION_K} (requested {k})")
        return super().search(x, k, *args, **kwargs)


class FakeGpuIndexIVF(FakeGpuIndex):
    nlist = 0

    def getNumLists(self) -> int:  # GpuIndexIVF's API
        return self.nlist

    def search(self, x, k, *args, **kwargs):
        nprobe = faiss.extract_index_ivf(self.inner).nprobe
        if not 0 < nprobe <= GPU_MAX_SELECTION_K:  # gpu/GpuIndexIVF.cu:378 -> gpu/impl/IndexUtils.cu:36-42
            raise RuntimeError(f"Error in void faiss::gpu::validateNProbe(size_t, bool): GPU IVF index only supports "
                               f"nprobe selection up to {GPU_MAX_SELECTION_K} (requested {nprobe})")
        return super().search(x, k, *args, **kwargs)


def _ptr(index) -> int:
    return int(index.this)


class FakeGpu:
    def __init__(self, monkeypatch, ngpu: int = 1, fail_with: str | None = None, kmeans_oom: bool = False):
        self.ngpu = ngpu
        self.fail_with = fail_with
        self.clones: list[dict] = []  # one per GPU index made (index_cpu_to_gpu, or a shard of index_cpu_to_all_gpus)
        self.params: list[tuple[str, float]] = []
        self.to_cpu = 0
        self.all_gpus: list[dict] = []  # one per index_cpu_to_all_gpus call
        self.gpu_indexes: dict[int, FakeGpuIndex] = {}  # C++ pointer -> the stand-in GPU index living there
        self.keep: list = []
        fake = self
        real_downcast = faiss.downcast_index
        self.real_downcast = real_downcast

        class Options:
            def __init__(self):
                self.useFloat16 = False
                self.shard = False

        class GpuParameterSpace:
            def set_index_parameter(self, index, name, value):
                fake.params.append((name, value))
                fake.set_parameter(index, name, value)

        def downcast_index(index):  # faiss's typemap knows the GPU classes (python/swigfaiss.swig:938-944)
            return fake.gpu_indexes.get(_ptr(index)) or real_downcast(index)

        for name, value in {"StandardGpuResources": object, "get_num_gpus": lambda: fake.ngpu,
                            "GpuClonerOptions": Options, "GpuMultipleClonerOptions": Options,
                            "GpuParameterSpace": GpuParameterSpace, "index_cpu_to_gpu": self.index_cpu_to_gpu,
                            "index_cpu_to_all_gpus": self.index_cpu_to_all_gpus,
                            "index_gpu_to_cpu": self.index_gpu_to_cpu, "GpuIndex": FakeGpuIndex,
                            "downcast_index": downcast_index}.items():
            monkeypatch.setattr(faiss, name, value, raising=False)
        if kmeans_oom:
            for cls in (faiss.IndexIVFPQ, faiss.IndexIVFFlat, faiss.IndexPreTransform):
                real_train = cls.train

                def train(self, x, real_train=real_train):
                    ivf = faiss.extract_index_ivf(self)
                    if ivf.clustering_index is not None and _ptr(ivf.clustering_index) in fake.gpu_indexes:
                        raise RuntimeError(OOM)  # the GPU k-means's distance buffer
                    return real_train(self, x)
                monkeypatch.setattr(cls, "train", train)

    # ----- gpu/GpuCloner.cpp:139-255, ToGpuCloner::clone_Index -----

    def index_cpu_to_gpu(self, res, device, index, options=None):
        if self.fail_with:
            raise RuntimeError(self.fail_with)
        fp16 = bool(options and options.useFloat16)
        inner = self.real_downcast(index)
        if isinstance(inner, (faiss.IndexPreTransform, faiss.IndexIDMap)):  # :246-252: the CPU Cloner, recursing
            if not isinstance(inner, faiss.IndexPreTransform) or inner.ntotal:
                raise NotImplementedError("the stand-in copies only an empty IndexPreTransform around a GPU index")
            return self._pretransform(inner, self.index_cpu_to_gpu(res, device, inner.index, options))
        if not isinstance(inner, (faiss.IndexFlat, faiss.IndexIVFFlat, faiss.IndexIVFScalarQuantizer,
                                  faiss.IndexIVFPQ)):
            raise RuntimeError(  # noqa: TRY004 (a FaissException reaches Python as a RuntimeError)
                "Error in virtual faiss::Index* faiss::gpu::ToGpuCloner::clone_Index(const faiss::Index*) at "
                "faiss/gpu/GpuCloner.cpp:253: This index type is not implemented on GPU.")
        if isinstance(inner, faiss.IndexIVFPQ):
            needed = (2 if fp16 else 4) * inner.pq.M * 2 ** inner.pq.nbits
            if needed > SHARED_MEM_PER_BLOCK:  # gpu/GpuIndexIVFPQ.cu:607-620
                raise RuntimeError(f"Error in void faiss::gpu::GpuIndexIVFPQ::verifyPQSettings_() const: Device "
                                   f"{device} has {SHARED_MEM_PER_BLOCK} bytes of shared memory, while "
                                   f"{inner.pq.nbits} bits per code and {inner.pq.M} sub-quantizers requires "
                                   f"{needed} bytes. Consider useFloat16LookupTables and/or reduce parameters")
        clone = faiss.clone_index(inner)
        ivf = None if isinstance(inner, faiss.IndexFlat) else faiss.extract_index_ivf(clone)
        self.clones.append({"device": device, "fp16": fp16, "ntotal": index.ntotal,
                            "kind": type(inner).__name__, "trained": index.is_trained})
        wrapper = FakeGpuIndex(index.d, False, True) if ivf is None else FakeGpuIndexIVF(index.d, False, False)
        wrapper.add_shard(clone)
        wrapper.syncWithSubIndexes()
        wrapper.inner = clone
        if ivf is not None:
            wrapper.nlist = ivf.nlist  # and nprobe as the CPU index had it (gpu/GpuIndexIVF.cu:158-159)
        self.gpu_indexes[_ptr(wrapper)] = wrapper
        return wrapper

    def _pretransform(self, cpu: faiss.IndexPreTransform, inner) -> faiss.IndexPreTransform:
        """clone_index.cpp:316-331: a CPU IndexPreTransform with the same transforms around `inner`."""
        out = faiss.clone_index(cpu)  # the transforms copied (with a CPU copy of the inner index, dropped here)
        out.own_fields = False  # so it never deletes the stand-in GPU index it now wraps (a leak, in a test only)
        out.index = inner
        self.keep.extend([out, inner])
        return out

    # ----- gpu/GpuCloner.cpp:325-489, ToGpuClonerMultiple -----

    def index_cpu_to_all_gpus(self, index, co=None, ngpu=-1):
        shard = bool(co and co.shard)
        self.all_gpus.append({"kind": type(self.real_downcast(index)).__name__, "shard": shard,
                              "fp16": bool(co and co.useFloat16)})
        return self._clone_multiple(index, co, shard)

    def _clone_multiple(self, index, co, shard: bool):
        n = self.ngpu
        inner = self.real_downcast(index)
        if n == 1:
            return self.index_cpu_to_gpu(None, 0, inner, co)
        if isinstance(inner, (faiss.IndexFlat, faiss.IndexIVFFlat, faiss.IndexIVFScalarQuantizer, faiss.IndexIVFPQ)):
            if not shard:
                raise NotImplementedError("the stand-in has no IndexReplicas")
            shards = []
            for i in range(n):  # `#pragma omp parallel for` (:360): an exception here terminates the process
                try:
                    if isinstance(inner, faiss.IndexFlat):
                        part = faiss.IndexFlat(inner.d, inner.metric_type)
                        lo, hi = inner.ntotal * i // n, inner.ntotal * (i + 1) // n
                        part.add(inner.reconstruct_n(lo, hi - lo))
                    else:
                        part = faiss.clone_index(inner)
                        part.reset()
                        inner.copy_subset_to(part, faiss.InvertedLists.SUBSET_TYPE_ID_MOD, n, i)  # shard_type 1
                    shards.append(self.index_cpu_to_gpu(None, i, part, co))
                except RuntimeError as e:
                    raise ProcessAborted(f"terminate called after throwing an instance of 'faiss::FaissException' "
                                         f"inside an OpenMP region: {e}") from None
            out = faiss.IndexShards(inner.d, True, isinstance(inner, faiss.IndexFlat))  # :417-431
            for s in shards:
                out.add_shard(s)
            self.keep.extend(shards)
            return out
        if isinstance(inner, faiss.IndexHNSW):  # clone_index.cpp:338-343: a CPU copy
            return faiss.clone_index(inner)
        if isinstance(inner, faiss.IndexPreTransform):  # clone_index.cpp:316-331
            return self._pretransform(inner, self._clone_multiple(inner.index, co, shard))
        if isinstance(inner, faiss.IndexRefine):  # clone_index.cpp:369-378
            base = self._clone_multiple(inner.base_index, co, shard)
            refine = self._clone_multiple(inner.refine_index, co, shard)
            out = faiss.IndexRefine(base, refine)
            out.k_factor = inner.k_factor
            self.keep.extend([base, refine, out])
            return out
        raise NotImplementedError(f"the stand-in does not clone {type(inner).__name__} to several GPUs")

    # ----- gpu/GpuAutoTune.cpp:81-114, then AutoTune.cpp:491-628 -----

    def set_parameter(self, index, name: str, value: float) -> None:
        fake = self.gpu_indexes.get(_ptr(index))
        if fake is not None:
            if name == "nprobe" and isinstance(fake, FakeGpuIndexIVF):  # GpuAutoTune.cpp:91-95
                faiss.extract_index_ivf(fake.inner).nprobe = int(value)
                return
            raise RuntimeError(f"ParameterSpace::set_index_parameter:could not set parameter {name}")
        inner = self.real_downcast(index)
        if isinstance(inner, (faiss.IndexIDMap, faiss.IndexPreTransform)):  # AutoTune.cpp:503-510
            return self.set_parameter(inner.index, name, value)
        if isinstance(inner, (faiss.IndexShards, faiss.IndexReplicas)):  # ThreadedIndex, AutoTune.cpp:521-528
            for i in range(inner.count()):
                self.set_parameter(inner.at(i), name, value)
            return
        if isinstance(inner, faiss.IndexRefine):  # AutoTune.cpp:529-537
            if name == "k_factor_rf":
                inner.k_factor = int(value)
                return
            return self.set_parameter(inner.base_index, name, value)
        faiss.ParameterSpace().set_index_parameter(inner, name, value)

    # ----- gpu/GpuCloner.cpp:71-122, ToCPUCloner::clone_Index -----

    def index_gpu_to_cpu(self, index):
        self.to_cpu += 1
        fake = self.gpu_indexes.get(_ptr(index))
        if fake is None:
            raise NotImplementedError("the stand-in copies back only a GPU index itself")
        return faiss.clone_index(fake.inner)

    def nprobe_of(self, index) -> int:
        """nprobe of the GPU IVF at or under `index`."""
        fake = self.gpu_indexes.get(_ptr(index))
        if fake is not None:
            return faiss.extract_index_ivf(fake.inner).nprobe
        inner = self.real_downcast(index)
        if isinstance(inner, (faiss.IndexShards, faiss.IndexReplicas)):
            values = {self.nprobe_of(inner.at(i)) for i in range(inner.count())}
            assert len(values) == 1, values
            return values.pop()
        return self.nprobe_of(inner.index)


def brute_force(corpus: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ corpus.T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]
