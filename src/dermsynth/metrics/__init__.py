"""Evaluation: generative metrics on feature embeddings, and classification metrics."""
