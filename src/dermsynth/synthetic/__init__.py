"""Synthetic training sets: SA-n datasets drawn from the transformed images, and their filtered variants."""
