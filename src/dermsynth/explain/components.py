"""What the explain stage reads that another stage made for one network, and one line when it is another's.

The explain verbs consume components made for one generator or one classifier: SeFa directions and
projections (made for a generator: the latent stage records `generator`, the digest of its weights), a
frame-moves proposal (for a generator), CRP's cached concept relevances (for a classifier). A component is
used only with the network it records, compared by the identity of the weights (`fingerprint.tensors_digest`),
never by tensor shapes, which two generators (or classifiers) of one architecture share.
"""

from __future__ import annotations

from ..checkpoints import load_npz, recorded_in_npz as recorded  # noqa: F401  (re-exported for the explain verbs)
from ..fingerprint import network_identity as generator_identity  # noqa: F401
from ..fingerprint import require_made_for, tensors_digest  # noqa: F401


def classifier_identity(saved: dict) -> str:
    """The identity of a classifier checkpoint's (best.pt) weights."""
    return tensors_digest(saved["model"])


__all__ = ["classifier_identity", "generator_identity", "load_npz", "recorded", "require_made_for"]
