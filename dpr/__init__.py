"""dureader-dpr: DPR-style Chinese dense passage retrieval. `from dpr import Retriever` is the Python API
(dpr/retrieval/retriever.py), `from dpr import Reranker` its cross-encoder (dpr/retrieval/reranker.py); importing
`dpr` alone loads nothing heavy (torch and faiss come with the API)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dpr.retrieval.reranker import Reranker
    from dpr.retrieval.retriever import Hit, Retriever

__all__ = ["Hit", "Reranker", "Retriever"]


def __getattr__(name: str) -> Any:
    if name == "Reranker":
        from dpr.retrieval import reranker

        return reranker.Reranker
    if name in __all__:
        from dpr.retrieval import retriever

        return getattr(retriever, name)
    raise AttributeError(f"module 'dpr' has no attribute {name!r}")
