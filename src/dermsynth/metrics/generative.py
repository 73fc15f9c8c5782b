"""Generative metrics on feature embeddings (Inception for FID/KID, VGG16 for precision/recall, …).

FID and KID are clean-fid's own computations; precision/recall follow Kynkäänniemi et al. 2019
(k-nearest-neighbour manifolds); α-precision, β-recall and authenticity follow Alaa et al. 2022
(on the embedding itself, centred on the real mean); the memorisation check compares each
generated (or projected) sample's distance to its nearest real image with that image's distance
to its own nearest real neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..devices import choose_device
from ..options import Settings
from .registry import register_metric


KID_SUBSETS = 100
"""KID's number of random subsets (clean-fid's `num_subsets`, Bińkowski et al. 2018): a constant of the method."""
KID_SEED = 0
"""The fixed seed of KID's subsets (not `evaluation.seed`, which chooses the real images and the latents)."""


# --- each registered metric's options (`metrics.registry`) ----------------------------------------------
@dataclass(frozen=True)
class FidOptions:
    """FID / Fréchet distance: no settings (clean-fid's computation; the PSD form for singular covariances)."""


@dataclass(frozen=True)
class KidOptions(Settings):
    """KID (Bińkowski et al. 2018): `subset_size` images per subset (`evaluation.kid_subset`, capped by the caller at
    both sets' sizes). Method constants: `subsets` subsets, drawn with the fixed `seed` (not `evaluation.seed`)."""

    schema_section = "evaluation"
    schema_keys = {"subset_size": "kid_subset"}
    method_constants = ("subsets", "seed")

    subset_size: int
    subsets: int = KID_SUBSETS
    seed: int = KID_SEED


@dataclass(frozen=True)
class NeighbourOptions(Settings):
    """Precision/recall (Kynkäänniemi et al. 2019) and α-precision/β-recall (Alaa et al. 2022): `k` nearest
    neighbours of the k-NN radii (`evaluation.k`)."""

    schema_section = "evaluation"

    k: int


@dataclass(frozen=True)
class AuthenticityOptions:
    """Authenticity: no settings (1-NN distances)."""


def rank_deficient(real: np.ndarray, fake: np.ndarray) -> bool:
    """Fewer samples than feature dimensions: the covariances are singular (demo-sized sets)."""
    return min(len(real), len(fake)) <= real.shape[1]


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """clean-fid's Fréchet distance. With singular covariances (see `rank_deficient`), where its
    general matrix square root turns complex, the trace term is computed exactly from the samples
    (`frechet_distance_samples`), without forming the d × d covariances. Such values are only
    comparable with FIDs from the same numbers of samples."""
    if not rank_deficient(real, fake):
        mu1, sigma1 = real.mean(axis=0), np.cov(real, rowvar=False)
        mu2, sigma2 = fake.mean(axis=0), np.cov(fake, rowvar=False)
        # deferred: clean-fid's fid module imports requests, tqdm and its feature networks (a second); only FID needs it
        from cleanfid import fid as clean_fid
        return float(clean_fid.frechet_distance(mu1, sigma1, mu2, sigma2))
    return frechet_distance_samples(real, fake)


def frechet_distance_samples(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance of two feature sets (float (n₁, d), (n₂, d)) from their centred samples R, F:
    Σ₁ = RᵀR/(n₁−1), Σ₂ = FᵀF/(n₂−1), and tr √(Σ₁Σ₂) = ‖R Fᵀ‖_* / √((n₁−1)(n₂−1)) — the non-zero
    eigenvalues of Σ₁Σ₂ = Rᵀ(R FᵀF) are those of (R Fᵀ)(R Fᵀ)ᵀ (eig(AB) = eig(BA) off zero), so the
    trace term is the nuclear norm (sum of singular values) of the n₁ × n₂ cross product. Exact for any
    sample sizes; O(n₁n₂d) instead of the O(d³) eigendecompositions of `frechet_distance_psd`."""
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    n1, n2 = len(real), len(fake)
    centred_real, centred_fake = real - real.mean(axis=0), fake - fake.mean(axis=0)
    trace1 = np.square(centred_real).sum() / (n1 - 1)
    trace2 = np.square(centred_fake).sum() / (n2 - 1)
    nuclear = np.linalg.svd(centred_real @ centred_fake.T, compute_uv=False).sum()
    mean_term = np.square(real.mean(axis=0) - fake.mean(axis=0)).sum()
    return float(mean_term + trace1 + trace2 - 2 * nuclear / np.sqrt((n1 - 1) * (n2 - 1)))


def _nonnegative(values: np.ndarray) -> np.ndarray:
    """Eigenvalues below the rank tolerance (λmax · n · ε, as numpy's matrix_rank) are zero."""
    tolerance = max(values.max(initial=0.0), 0.0) * len(values) * np.finfo(values.dtype).eps
    return np.where(values > tolerance, values, 0.0)


def frechet_distance_psd(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance from means (d,) and covariances (d, d) in the symmetric form
    tr √(Σ₁Σ₂) = Σ √λ(Σ₁^½ Σ₂ Σ₁^½), exact for any positive semi-definite pair (eigenvalues below the rank
    tolerance are zero). The covariance-based reference for `frechet_distance_samples`."""
    values, vectors = np.linalg.eigh(sigma1)
    root1 = (vectors * np.sqrt(_nonnegative(values))) @ vectors.T
    middle = root1 @ sigma2 @ root1
    trace_covmean = np.sqrt(_nonnegative(np.linalg.eigvalsh((middle + middle.T) / 2))).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_covmean)


def kid(real: np.ndarray, fake: np.ndarray, subset_size: int, subsets: int = KID_SUBSETS,
        seed: int = KID_SEED) -> float:
    """Unbiased KID (Bińkowski et al. 2018; cubic polynomial kernel) of float (N, D) feature sets, averaged over
    `subsets` random subsets of m = min(`subset_size`, N_real, N_fake) images each (`evaluation.kid_subset`: the
    caller passes it), drawn with `seed`. Returns a float (×100: `kid_percent`).

    clean-fid's `kernel_distance`, computed with a local `np.random.RandomState(seed)` instead of numpy's global
    generator (which clean-fid draws from): the same subsets as `np.random.seed(seed)` followed by clean-fid,
    so the same values, and no global random state is touched."""
    rng = np.random.RandomState(seed)
    n = real.shape[1]
    m = min(min(real.shape[0], fake.shape[0]), subset_size)
    total = 0
    for _ in range(subsets):
        x = fake[rng.choice(fake.shape[0], m, replace=False)]
        y = real[rng.choice(real.shape[0], m, replace=False)]
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        total += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(total / subsets / m)


def _row_blocks(a: np.ndarray, b: np.ndarray, batch: int = 2048):
    """(row offset, distances of a block of rows of `a` to all of `b`), never the whole matrix: at
    50k × 50k samples that would be 20 GB."""
    device = choose_device()
    b_t = torch.as_tensor(b, dtype=torch.float64, device=device)
    for start in range(0, len(a), batch):
        block = torch.as_tensor(a[start:start + batch], dtype=torch.float64, device=device)
        yield start, torch.cdist(block, b_t)


def _kth_neighbour_radius(features: np.ndarray, k: int) -> torch.Tensor:
    """Distance from each sample to its k-th nearest other sample."""
    radii = [d.kthvalue(k + 1, dim=1).values.cpu() for _, d in _row_blocks(features, features)]
    return torch.cat(radii)  # +1 above: the sample itself is at distance 0


def _covered(samples: np.ndarray, centres: np.ndarray, radii: torch.Tensor) -> torch.Tensor:
    """Whether each sample lies within the radius of at least one centre."""
    radii = radii.to(choose_device())
    return torch.cat([(d <= radii[None, :]).any(dim=1).cpu() for _, d in _row_blocks(samples, centres)])


def _nearest(a: np.ndarray, b: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of `a`: the index of its nearest row of `b` and that distance."""
    pairs = [d.min(dim=1) for _, d in _row_blocks(a, b)]
    return torch.cat([p.indices.cpu() for p in pairs]), torch.cat([p.values.cpu() for p in pairs])


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019) of float (N, D) feature sets: the share of
    generated samples inside some real sample's k-NN ball, and of real samples inside some generated sample's
    k-NN ball; both in [0, 1]. `k`: the neighbours of the radii (`evaluation.k`; 3 in the paper)."""
    real_radius, fake_radius = _kth_neighbour_radius(real, k), _kth_neighbour_radius(fake, k)
    precision = _covered(fake, real, real_radius).double().mean().item()
    recall = _covered(real, fake, fake_radius).double().mean().item()
    return precision, recall


def alpha_precision_beta_recall(real: np.ndarray, fake: np.ndarray, k: int, levels: int = 20) -> dict:
    """Integrated α-precision and β-recall (Alaa et al. 2022), 1 − 2·mean|curve − α| over `levels` α levels, of
    float (N, D) feature sets; `k`: the neighbours of the real k-NN radii (`evaluation.k`).

    Computed on the embedding itself (no one-class network). β-recall saturates below 1 even for
    samples of the same distribution (a real point is covered only if its nearest synthetic point
    lies within its k-NN radius), so compare it between generators rather than to 1.
    """
    alphas = np.linspace(1 / levels, 1, levels)
    centre_real, centre_fake = real.mean(axis=0), fake.mean(axis=0)
    real_radius = np.linalg.norm(real - centre_real, axis=1)
    fake_to_real_centre = np.linalg.norm(fake - centre_real, axis=1)
    fake_radius = np.linalg.norm(fake - centre_fake, axis=1)
    nearest_fake, nearest_distance = (t.numpy() for t in _nearest(real, fake))
    real_knn = _kth_neighbour_radius(real, k).numpy()
    close = nearest_distance <= real_knn
    precision_curve, recall_curve = [], []
    for a in alphas:
        precision_curve.append(float(np.mean(fake_to_real_centre <= np.quantile(real_radius, a))))
        matched_radius = fake_radius[nearest_fake]  # β-support radii over the matched synthetic samples
        in_support = matched_radius <= np.quantile(matched_radius, a)
        recall_curve.append(float(np.mean(close & in_support)))
    precision_curve, recall_curve = np.array(precision_curve), np.array(recall_curve)
    return {
        "alpha_precision": float(1 - 2 * np.abs(precision_curve - alphas).mean()),
        "beta_recall": float(1 - 2 * np.abs(recall_curve - alphas).mean()),
        "alphas": alphas.round(4).tolist(),
        "alpha_precision_curve": precision_curve.round(4).tolist(),
        "beta_recall_curve": recall_curve.round(4).tolist(),
    }


def nearest_real(real: np.ndarray, samples: np.ndarray) -> dict[str, np.ndarray]:
    """For each sample: its nearest real index, that distance, and the real's own 1-NN distance."""
    nearest, distance = _nearest(samples, real)
    real_nn = _kth_neighbour_radius(real, 1)[nearest]
    return {"nearest": nearest.numpy(), "distance": distance.numpy(), "real_nn_distance": real_nn.numpy()}


def authenticity(real: np.ndarray, fake: np.ndarray) -> float:
    """Share of generated samples farther from their nearest real image than that image is from
    its own nearest real neighbour (Alaa et al. 2022): ≈0 for copies of the training set."""
    match = nearest_real(real, fake)
    return float(np.mean(match["distance"] > match["real_nn_distance"]))


def memorisation(real: np.ndarray, samples: np.ndarray, copy_ratio: float) -> dict:
    """Per sample of float (N, D) `samples`: nearest real, distance ratio to that real's own 1-NN distance, and a
    copy flag (ratio < `copy_ratio`, `evaluation.copy_ratio`)."""
    match = nearest_real(real, samples)
    ratio = match["distance"] / np.maximum(match["real_nn_distance"], 1e-12)
    return {"nearest_real": match["nearest"].tolist(), "distance": match["distance"].tolist(),
            "ratio": ratio.tolist(), "copy": (ratio < copy_ratio).tolist(),
            "copies": int((ratio < copy_ratio).sum()), "copy_ratio_threshold": copy_ratio}


# --- the registered metrics: (real, fake, options) → one value per JSON key of the feature space --------------
@register_metric("fid", options=FidOptions, spaces={"inception": ("fid", "fid_rank_deficient"),
                                                    "lite0": ("fd_lite0", "fd_lite0_rank_deficient")})
def fid_metric(real: np.ndarray, fake: np.ndarray, options: FidOptions) -> tuple[float, bool]:
    """Fréchet distance and whether the covariances are singular (FID in Inception features; in other
    features it is a Fréchet distance, never called FID)."""
    return fid(real, fake), rank_deficient(real, fake)


@register_metric("kid", options=KidOptions, spaces={"inception": ("kid", "kid_percent"),
                                                    "lite0": ("kid_lite0", "kid_lite0_percent")})
def kid_metric(real: np.ndarray, fake: np.ndarray, options: KidOptions) -> tuple[float, float]:
    """KID and KID × 100."""
    value = kid(real, fake, subsets=options.subsets, subset_size=options.subset_size, seed=options.seed)
    return value, value * 100


@register_metric("precision_recall", options=NeighbourOptions, spaces={"vgg16": ("precision", "recall")})
def precision_recall_metric(real: np.ndarray, fake: np.ndarray, options: NeighbourOptions) -> tuple[float, float]:
    """Precision and recall (Kynkäänniemi et al. 2019)."""
    return precision_recall(real, fake, k=options.k)


@register_metric("alpha_beta", options=NeighbourOptions, spaces={"vgg16": ("alpha_precision", "beta_recall")})
def alpha_beta_metric(real: np.ndarray, fake: np.ndarray, options: NeighbourOptions) -> tuple[float, float]:
    """Integrated α-precision and β-recall (Alaa et al. 2022)."""
    result = alpha_precision_beta_recall(real, fake, k=options.k)
    return result["alpha_precision"], result["beta_recall"]


@register_metric("authenticity", options=AuthenticityOptions, spaces={"vgg16": ("authenticity",)})
def authenticity_metric(real: np.ndarray, fake: np.ndarray, options: AuthenticityOptions) -> tuple[float]:
    """Authenticity (Alaa et al. 2022)."""
    return (authenticity(real, fake),)
