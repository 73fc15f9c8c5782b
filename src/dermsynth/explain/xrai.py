"""XRAI saliency (Kapishnikov et al., ICCV 2019) of a classifier's decision, through the `saliency`
library (PAIR): integrated gradients from a black and a white baseline, aggregated over
Felzenszwalb segments into regions ranked by attribution density. The ISIC study used it to see
why edge cases are hard and what the network looks at in central cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..classify.data import normalise, resize
from ..figures import pyplot as plt
from ..outputs import save_figure


def xrai_heatmaps(model, images: torch.Tensor, class_indices: list[int], resolution: int, device, *,
                  steps: int, batch: int = 16) -> np.ndarray:
    """XRAI attribution (N, R, R) of uint8 images (N, 3, H, W) for the given class of each, at the
    classifier's input resolution R; `steps` integrated-gradients steps per baseline (`explain.authenticity.
    xrai_steps`; no default here), `batch` images per forward pass of the saliency library."""
    # deferred: optional dependency saliency (XRAI only)
    import saliency.core as saliency
    model = model.to(device).eval()
    inputs = normalise(resize(images, resolution)).permute(0, 2, 3, 1).numpy()  # HWC, as the library wants
    full = torch.full((1, 3, resolution, resolution), 255, dtype=torch.uint8)
    baselines = [normalise(full * 0)[0].permute(1, 2, 0).numpy(), normalise(full)[0].permute(1, 2, 0).numpy()]
    xrai, parameters = saliency.XRAI(), saliency.XRAIParameters(steps=steps)
    heatmaps = []
    for x, class_index in zip(inputs, class_indices):
        def gradients(batch_hwc, call_model_args=None, expected_keys=None, class_index=class_index):
            """saliency's model callback: float32 (B, H, W, 3) inputs → {INPUT_OUTPUT_GRADIENTS: d logit / d input,
            float32 (B, H, W, 3)} of class `class_index`."""
            x_batch = torch.from_numpy(np.asarray(batch_hwc, dtype=np.float32)).permute(0, 3, 1, 2).to(device)
            x_batch.requires_grad_(True)
            grad, = torch.autograd.grad(model(x_batch)[:, class_index].sum(), x_batch)
            return {saliency.base.INPUT_OUTPUT_GRADIENTS: grad.permute(0, 2, 3, 1).cpu().numpy()}
        heatmaps.append(xrai.GetMask(x, gradients, baselines=baselines, batch_size=batch, extra_parameters=parameters))
    return np.stack(heatmaps).astype(np.float32)


def xrai_figure(images: torch.Tensor, heatmaps: np.ndarray, titles: list[str], out_png: Path,
                top_fraction: float = 0.3, heading: str = "") -> None:
    """One column per image: the image, its XRAI heatmap, and the image shown only in its most salient
    `top_fraction` of pixels; `heading` heads the figure (say there when the classifier's weights were random-init)."""
    pictures = resize(images, heatmaps.shape[-1]).permute(0, 2, 3, 1).numpy()
    figure, axes = plt.subplots(3, len(pictures), figsize=(2 * len(pictures), 6.4), squeeze=False)
    for column, (picture, heatmap, title) in enumerate(zip(pictures, heatmaps, titles)):
        threshold = np.quantile(heatmap, 1 - top_fraction)
        axes[0, column].imshow(picture)
        axes[0, column].set_title(title, fontsize=7)
        axes[1, column].imshow(heatmap, cmap="inferno")
        axes[2, column].imshow(np.where((heatmap >= threshold)[..., None], picture, 0))
    for axis, name in zip(axes[:, 0], ("image", "XRAI", f"top {top_fraction:.0%}")):
        axis.set_ylabel(name, fontsize=8)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    if heading:
        figure.suptitle(heading, fontsize=8)
    figure.tight_layout()
    save_figure(out_png, figure, dpi=110)
    plt.close(figure)
