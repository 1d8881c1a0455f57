"""A stand-in for faiss-gpu on a CPU build: the cloner returns the CPU index wrapped so that, like a real GpuIndexIVF,
faiss.extract_index_ivf cannot see inside it and it arrives with nprobe 1; every call is recorded."""
from __future__ import annotations

import faiss
import numpy as np


class FakeGpuIndex(faiss.IndexShards):
    """What the stand-in cloner returns: the CPU clone inside a container extract_index_ivf cannot open."""

    inner = None
    refs = None


class FakeGpuIndexIVF(FakeGpuIndex):
    nlist = 0

    def getNumLists(self) -> int:  # GpuIndexIVF's API
        return self.nlist


class FakeGpu:
    def __init__(self, monkeypatch, ngpu: int = 1, fail_with: str | None = None):
        self.ngpu = ngpu
        self.fail_with = fail_with
        self.clones: list[dict] = []  # one per index_cpu_to_gpu call
        self.params: list[tuple[str, float]] = []
        self.to_cpu = 0
        fake = self

        class Options:
            def __init__(self):
                self.useFloat16 = False
                self.shard = False

        class GpuParameterSpace:
            def set_index_parameter(self, index, name, value):
                fake.params.append((name, value))
                inner = index.inner
                if name == "nprobe":
                    faiss.extract_index_ivf(inner).nprobe = int(value)
                else:
                    faiss.ParameterSpace().set_index_parameter(inner, name, value)

        for name, value in {"StandardGpuResources": object, "get_num_gpus": lambda: fake.ngpu,
                            "GpuClonerOptions": Options, "GpuMultipleClonerOptions": Options,
                            "GpuParameterSpace": GpuParameterSpace, "index_cpu_to_gpu": self.index_cpu_to_gpu,
                            "index_gpu_to_cpu": self.index_gpu_to_cpu}.items():
            monkeypatch.setattr(faiss, name, value, raising=False)

    def index_cpu_to_gpu(self, res, device, index, options=None):
        if self.fail_with:
            raise RuntimeError(self.fail_with)
        clone = faiss.clone_index(index)
        try:
            ivf = faiss.extract_index_ivf(clone)
            ivf.nprobe = 1  # what a GPU clone arrives with unless it is set afterwards
        except RuntimeError:
            ivf = None
        self.clones.append({"device": device, "fp16": bool(options and options.useFloat16), "ntotal": index.ntotal,
                            "kind": type(faiss.downcast_index(index)).__name__, "trained": index.is_trained})
        wrapper = FakeGpuIndex(index.d, False, True) if ivf is None else FakeGpuIndexIVF(index.d, False, False)
        wrapper.add_shard(clone)
        wrapper.syncWithSubIndexes()
        wrapper.inner = clone
        if ivf is not None:
            wrapper.nlist = ivf.nlist
        return wrapper

    def index_gpu_to_cpu(self, index):
        self.to_cpu += 1
        return faiss.clone_index(index.inner)

    def nprobe_of(self, wrapper) -> int:
        return faiss.extract_index_ivf(wrapper.inner).nprobe


def brute_force(corpus: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ corpus.T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]
