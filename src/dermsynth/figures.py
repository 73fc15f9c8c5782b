"""Matplotlib for figures written to files, set up once, and the labelled image grid every picture uses.

Every figure of the project is drawn off-screen (PNG/SVG files on a cluster node without a display), so the
non-interactive Agg backend is selected here, once, before pyplot is imported; modules that draw import
`pyplot` from here (`from ..figures import pyplot as plt`) and save with `outputs.save_figure`, which stores every
text the figure shows (`figure_texts`) in the PNG's metadata (tEXt chunk `LABELS_KEY`, JSON): a test or a user's
script reads what a figure says with `outputs.read_figure_labels(path)`, without OCR.

`image_grid` is the one way a grid of images that a person reads is drawn: each row and column labelled, a title,
and the images at one image pixel per figure pixel.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")

from matplotlib import pyplot  # noqa: E402  (the backend must be chosen first)

from .outputs import FIGURE_LABELS_KEY, figure_texts, save_figure  # noqa: E402

LABELS_KEY = FIGURE_LABELS_KEY
GRID_DPI = 100
"""Dots per inch of `image_grid` figures: a 10-point label is 14 px high, and one image pixel is one PNG pixel."""

MODEL_COLOURS = {"federated": "tab:blue", "alone": "tab:orange", "central": "tab:green"}
"""One colour per curve of the federated figures, the same in every panel."""


def random_init_note(real_weights: bool, what: str = "networks") -> str:
    """' — random-init <what>' when `real_weights` is False (a figure computed with networks that were not given
    their published weights must say so in its title), '' otherwise."""
    return "" if real_weights else f" — random-init {what}"


def image_grid(images, row_labels: Sequence[str], column_labels: Sequence[str], title: str, *,
               row_title: str = "", column_title: str = ""):
    """A matplotlib figure of uint8 `images` (rows, columns, 3, H, W) (a NumPy array or a CPU tensor) drawn as one
    picture, one image pixel per figure pixel at `GRID_DPI` (saved PNGs keep the pixels unscaled: save with
    `outputs.save_figure`, which crops to the labels with bbox_inches="tight" and does not resample). Each row is
    labelled on the left with `row_labels[r]`, each column on top with `column_labels[c]`, `row_title` and
    `column_title` name what the rows and columns are, and `title` (one or more lines) heads the figure. Label
    lines are sized to the image height (4–10 pt). Raises ValueError when the label counts do not match the
    grid's shape. The caller closes the figure (`pyplot.close`)."""
    images = np.asarray(images)
    if images.ndim != 5 or images.shape[2] not in (1, 3):
        raise ValueError(f"image_grid wants uint8 images (rows, columns, 3, H, W), got shape {images.shape}")
    rows, columns, _, height, width = images.shape
    if len(row_labels) != rows or len(column_labels) != columns:
        raise ValueError(f"image_grid: {len(row_labels)} row labels and {len(column_labels)} column labels for a "
                         f"{rows} × {columns} grid")
    picture = images.transpose(0, 3, 1, 4, 2).reshape(rows * height, columns * width, images.shape[2])
    figure = pyplot.figure(figsize=(columns * width / GRID_DPI, rows * height / GRID_DPI), dpi=GRID_DPI)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.imshow(picture.squeeze(-1) if picture.shape[-1] == 1 else picture, interpolation="none", aspect="auto",
                cmap="gray" if picture.shape[-1] == 1 else None)
    lines = max([str(label).count("\n") + 1 for label in row_labels] + [1])
    size = float(np.clip(height * 72 / GRID_DPI / (1.35 * lines), 4, 10))
    axes.set_yticks((np.arange(rows) + 0.5) * height - 0.5, [str(label) for label in row_labels], fontsize=size)
    axes.xaxis.tick_top()
    axes.xaxis.set_label_position("top")
    axes.set_xticks((np.arange(columns) + 0.5) * width - 0.5, [str(label) for label in column_labels],
                    fontsize=_column_size(column_labels, width, size))
    axes.tick_params(length=0, pad=2)
    for spine in axes.spines.values():
        spine.set_visible(False)
    if row_title:
        axes.set_ylabel(row_title, fontsize=9)
    if column_title:
        axes.set_xlabel(column_title, fontsize=9)
    axes.set_title(title, fontsize=10)  # placed above the column labels by matplotlib
    return figure


def write_image_grid(path, images, row_labels: Sequence[str], column_labels: Sequence[str], title: str, *,
                     row_title: str = "", column_title: str = "") -> None:
    """`image_grid` saved at `path` with `outputs.save_figure` (atomically, labels in the PNG's metadata) and
    closed. Raises ValueError (label counts) or OutputError (the file cannot be written)."""
    figure = image_grid(images, row_labels, column_labels, title, row_title=row_title, column_title=column_title)
    try:
        save_figure(path, figure)
    finally:
        pyplot.close(figure)


def _column_size(labels: Sequence[str], width: int, row_size: float) -> float:
    """Points for column labels that fit `width` pixels (a character is about 0.75 em wide), at most the rows'."""
    longest = max([len(line) for label in labels for line in str(label).split("\n")] + [1])
    return float(np.clip(width * 72 / GRID_DPI / (0.75 * longest), 4, min(row_size, 9)))


__all__ = ["GRID_DPI", "LABELS_KEY", "MODEL_COLOURS", "figure_texts", "image_grid", "pyplot", "random_init_note",
           "write_image_grid"]
