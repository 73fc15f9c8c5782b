"""Closed-form factorisation of a StyleGAN2 generator's latent space (SeFa; Shen & Zhou 2021).

Every modulated layer turns w into styles through an affine map A_l (channels_l × w_dim). Moving w
by n changes the styles of the chosen layers by A·n, with A the stacked A_l. The directions that
change the styles most are the top right singular vectors of A: the unit n maximising ‖A n‖². As in
the study, each row of A (one channel's weights) is first normalised to unit length — SeFa's
"column normalisation" of Aᵀ — so that wide layers do not dominate by scale alone; then
A = U Σ Vᵀ, and the columns of V sorted by σ² (the eigenvalues of AᵀA) are the directions.

Layer ranges follow the synthesis resolutions: coarse = 4²–8², middle = 16²–32², fine = 64² and up
(the toRGB styles of a block belong to its resolution); `all` takes every modulated layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..gan.pixels import to_uint8
from ..options import Settings
from .named import LAYER_RANGES


@dataclass(frozen=True)
class PreviewSettings(Settings):
    """The SeFa preview grid (`latent.sefa`): the top `directions` directions (`preview_directions`) × `samples`
    latents (`preview_samples`) as rows, `steps` columns (`preview_steps`, ≥ 2) from −`magnitude` to +`magnitude`
    (`preview_magnitude`, a distance in W), the latents drawn from `seed` and truncated at `truncation_psi`."""

    schema_section = "latent.sefa"
    schema_keys = {"directions": "preview_directions", "samples": "preview_samples",
                   "magnitude": "preview_magnitude", "steps": "preview_steps"}

    directions: int
    samples: int
    magnitude: float
    steps: int
    truncation_psi: float
    seed: int


def layer_resolution(layer_name: str) -> int:
    """'b16.conv1' → 16."""
    return int(layer_name.split(".")[0][1:])


def style_layers_in(G, layer_range: str) -> list[tuple[int, str, torch.nn.Module]]:
    """(index in ws, name, affine layer) of the modulated layers in `layer_range`.

    The ws index of a block's toRGB equals the next block's first conv (they share a style)."""
    if layer_range not in LAYER_RANGES:
        raise ValueError(f"unknown layer range {layer_range!r}; choose from {', '.join(LAYER_RANGES)}")
    low, high = LAYER_RANGES[layer_range]
    chosen, ws_index = [], 0
    for block in G.synthesis.blocks:
        for name in ("conv0", "conv1"):
            layer = getattr(block, name)
            if layer is not None:
                if low <= block.resolution <= high:
                    chosen.append((ws_index, f"b{block.resolution}.{name}", layer.affine))
                ws_index += 1
        if low <= block.resolution <= high:
            chosen.append((ws_index, f"b{block.resolution}.torgb", block.torgb.affine))
    return chosen


def factorize(G, layer_range: str = "all") -> dict:
    """Directions (rows, unit length, sorted by eigenvalue) and eigenvalues for one layer range."""
    layers = style_layers_in(G, layer_range)
    if not layers:
        raise ValueError(f"the generator ({G.img_resolution}²) has no modulated layers in range {layer_range!r}")
    weight = torch.cat([affine.effective_weight().detach().double().cpu() for _, _, affine in layers])
    weight = weight / weight.norm(dim=1, keepdim=True)
    _, singular, vh = torch.linalg.svd(weight, full_matrices=True)
    eigenvalues = torch.zeros(weight.shape[1], dtype=torch.float64)
    eigenvalues[:len(singular)] = singular.square()
    return {"directions": vh.numpy(), "eigenvalues": eigenvalues.numpy(),
            "layer_range": layer_range, "layer_names": [name for _, name, _ in layers],
            "ws_indices": sorted({index for index, _, _ in layers})}


def apply_direction(ws: torch.Tensor, direction: torch.Tensor, magnitude: float | torch.Tensor,
                    ws_indices: list[int]) -> torch.Tensor:
    """W+ latents (N, num_ws, w_dim) moved by magnitude × direction in the chosen layers only."""
    ws = ws.clone()
    magnitude = torch.as_tensor(magnitude, dtype=ws.dtype, device=ws.device).reshape(-1, 1)
    ws[:, ws_indices] += (magnitude * direction.to(ws)[None, :])[:, None, :]
    return ws


def preview_grid(G, factors: dict, preview: PreviewSettings, class_index: int | None = None,
                 device="cpu") -> np.ndarray:
    """uint8 (H, W, 3) grid of generator `G`'s images along the directions of `factors` (`factorize`): one row per
    (direction, sample), columns from −magnitude to +magnitude (distances in W along the unit direction, the units
    the transformations file uses), as `preview` says. A conditional generator draws every row for class
    `class_index` (the first class when None). The labelled picture of the same images is `preview_figure`."""
    images = preview_images(G, factors, preview, class_index, device)
    rows, steps, channels, height, width = images.shape
    return images.permute(0, 3, 1, 4, 2).reshape(rows * height, steps * width, channels).numpy()


def preview_images(G, factors: dict, preview: PreviewSettings, class_index: int | None = None,
                   device="cpu") -> torch.Tensor:
    """uint8 images (rows, steps, 3, R, R) of `preview_grid`: row d·samples + s is direction d moved from sample s
    (the s-th latent drawn from `preview.seed`), column j is magnitude `preview_magnitudes(preview)[j]`."""
    with torch.no_grad():  # a context, not a decorator: mutation testing (docs/testing.md) skips decorated functions
        return _preview_images(G, factors, preview.directions, preview.samples, preview.magnitude, preview.steps,
                               preview.truncation_psi, preview.seed, class_index, device)


def preview_magnitudes(preview: PreviewSettings) -> list[float]:
    """The preview's columns: `preview.steps` magnitudes (distances in W) from −magnitude to +magnitude."""
    return torch.linspace(-preview.magnitude, preview.magnitude, preview.steps).tolist()


def preview_labels(factors: dict, preview: PreviewSettings) -> tuple[list[str], list[str]]:
    """(row labels, column labels) of the preview: 'direction d, eigenvalue <λ_d>' over 'sample s of S' per row
    (sample s is the same latent in every direction's rows; the seed they are drawn with is in the title), the
    signed magnitude in W per column."""
    shown = min(preview.directions, len(factors["directions"]))
    rows = [f"direction {d}, eigenvalue {factors['eigenvalues'][d]:.3g}\nsample {s + 1} of {preview.samples}"
            for d in range(shown) for s in range(preview.samples)]
    return rows, [f"{m:+.2g}" for m in preview_magnitudes(preview)]


def preview_figure(G, factors: dict, preview: PreviewSettings, generator_name: str, class_name: str | None = None,
                   class_index: int | None = None, device="cpu"):
    """The labelled SeFa preview (`figures.image_grid`), where a person names directions: `preview_images`, each
    row labelled with its direction index, eigenvalue and sample (the same samples for every direction; the title
    names the seed they are drawn with), each
    column with its magnitude in W; the title names the generator (`generator_name`), the layer range and its
    layers, the truncation ψ and, for a conditional generator, the class drawn (`class_name`). The caller saves
    (`outputs.save_figure`) and closes it."""
    # deferred: matplotlib only for the verb that draws the figure; the factorisation is imported without it
    from ..figures import image_grid
    images = preview_images(G, factors, preview, class_index, device)
    row_labels, column_labels = preview_labels(factors, preview)
    names = factors["layer_names"]
    layers = names[0] if len(names) == 1 else f"{names[0]}…{names[-1]}"
    drawn = f", class {class_name}" if class_name else ""
    title = (f"SeFa directions of {generator_name}: layers {factors['layer_range']} ({layers}), "
             f"ψ={preview.truncation_psi:g}{drawn}; samples drawn with seed {preview.seed}")
    return image_grid(images, row_labels, column_labels, title, row_title="direction, eigenvalue, sample",
                      column_title="magnitude along the direction (distance in W)")


def _preview_images(G, factors, directions, samples, magnitude, steps, truncation_psi, seed, class_index,
                    device) -> torch.Tensor:
    G = G.to(device).eval()
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(samples, G.z_dim, generator=generator).to(device)
    c = None
    if G.c_dim > 0:
        c = torch.zeros(samples, G.c_dim, device=device)
        c[:, class_index or 0] = 1
    ws = G.mapping(z, c, truncation_psi=truncation_psi)
    alphas = torch.linspace(-magnitude, magnitude, steps)
    rows = []
    vectors = torch.from_numpy(factors["directions"]).float()
    for d in range(min(directions, len(vectors))):
        for s in range(samples):
            moved = apply_direction(ws[s:s + 1].repeat(steps, 1, 1), vectors[d], alphas, factors["ws_indices"])
            rows.append(to_uint8(G.synthesis(moved, noise_mode="const")).cpu())  # (steps, 3, R, R)
    return torch.stack(rows)
