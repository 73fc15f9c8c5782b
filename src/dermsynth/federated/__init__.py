"""Federated StyleGAN2 training across hospitals with Flower (ISIC study §3.2, §4.1): the stage's options,
the hospitals' and the server's sides of a round, the launcher of real Flower processes, and the comparison
with each hospital alone and the central generator. See docs/federated.md."""
