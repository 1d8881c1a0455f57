"""Retrieval outputs: the official submission, the rerank file, metrics, question-encoding cache, hard-negative mining."""
