"""Placeholder until its issue lands."""
import sys

sys.exit("generate_dense_embeddings.py: not built yet")
