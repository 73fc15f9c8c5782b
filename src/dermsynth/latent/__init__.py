"""Latent-space stage: closed-form factorisation (SeFa), inversion, transformations, synthetic datasets."""
