"""Which generator (and data) a latent-stage component belongs to, and one line when it belongs to another.

Everything the latent stage writes for a generator — an e4e encoder, a HyperStyle hypernetwork (and their
resume checkpoints), SeFa directions, projections, inversions and their chunks — records the identity of the
generator's weights (`fingerprint.tensors_digest` of G_ema, the network that synthesises the images) and,
where it was trained on images, of those images (the LMDB store's identity, a digest of the chosen keys, the
classes, the resolution). A component is reused only with the generator it records: shapes may agree by
chance (two generators of one architecture), the weights never do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..checkpoints import load_npz, recorded_in_npz  # noqa: F401  (the latent stage's readers of .npz components)
from ..fingerprint import ForeignComponentError, digest, network_identity, require_made_for, store_identity

generator_digest = network_identity  # the identity of generator `G`'s weights (its state dict, buffers included)
require_generator = require_made_for  # (path, recorded, expected, network, fix, what="generator"): one line when not


def data_fingerprint(lmdb_root: str | Path, keys: list[str], classes: list[str] | None, resolution: int) -> dict:
    """What identifies a training image set: the store, the chosen keys, the classes and the resolution."""
    return {"data.store": store_identity(lmdb_root), "data.selection": digest(sorted(keys)),
            "data.classes": sorted(classes) if classes else None, "data.resolution": int(resolution)}


def recorded_digest(state: Mapping[str, Any], key: str = "generator") -> str | None:
    """The digest a saved component recorded under fingerprint[`key`] (None when it records none)."""
    fingerprint = state.get("fingerprint") if isinstance(state, Mapping) else None
    if isinstance(fingerprint, Mapping):
        value = fingerprint.get(key)
        return None if value is None else str(value)
    return None


__all__ = ["ForeignComponentError", "data_fingerprint", "generator_digest", "load_npz", "recorded_digest",
           "recorded_in_npz", "require_generator"]
