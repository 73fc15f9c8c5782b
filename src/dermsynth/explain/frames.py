"""Frame score: how much of an image's corners the dermatoscope's black circular frame covers.

The ISIC study (§4.3, Fig. 4–5) found that most malignant images carry the dermatoscope's black circular
frame, an artifact entangled with the class. The frame score measures it with a pixel statistic:

    frame_score = share of the *corner ring* that is near-black,

where the corner ring is every pixel whose centre lies outside the image's inscribed circle (distance from
the image centre > min(H, W) / 2; 1 − π/4 ≈ 21.5 % of a square image), and a pixel is near-black when its
brightest channel is at most `NEAR_BLACK` (40 of 255). An image has a frame when its score is at least
`explain.frames.threshold` (0.02 in the schema: at least 2 % of the ring). A frame reaches into the corners first, so the ring is
where it shows; dark lesions sit in the middle, and skin, even of Fitzpatrick type VI under the vignette
(brightest channel ≈ 60), hair (thin lines) and ruler ticks rarely make 2 % of the ring near-black.

Validated on the demo archives, whose frames are known from the drawing code (`demo_truth.csv` records
each frame's circle: `demo_frame_truth` turns it into the share of the stored image's ring that the frame
covers). A frame whose circle is wider than the stored centre square's corners (wide photographs, ISIC
2020) is drawn but not in the stored image: `visible` tells those apart. On the tests' demo: every
HAM10000 / ISIC 2018 image is classified right; against the drawn truth of the ISIC dataset (ISIC 2020 +
2019) about 95 % (the misses are frames outside the stored square), against the visible truth ≥ 98 %.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.dataset import read_images
from ..data.lmdb_store import LmdbImageStore
from ..outputs import write_csv

NEAR_BLACK = 40
"""A pixel is near-black when its brightest channel is ≤ this (uint8; the demo frame is 5 ± JPEG noise)."""

def corner_ring(height: int, width: int) -> np.ndarray:
    """bool (height, width): pixels whose centre lies outside the inscribed circle (distance from the
    image centre > min(height, width) / 2). Raises ValueError for an empty image."""
    if height < 1 or width < 1:
        raise ValueError(f"an image of {height}×{width} pixels has no corner ring")
    y, x = np.mgrid[0:height, 0:width]
    distance = np.hypot(x + 0.5 - width / 2, y + 0.5 - height / 2)
    return distance > min(height, width) / 2


def frame_scores(images) -> np.ndarray:
    """float64 (N,) in [0, 1]: the share of each image's corner ring that is near-black (`NEAR_BLACK`).

    images: uint8 (N, 3, H, W), a numpy array or a CPU torch tensor (as `read_images` returns them).
    Raises ValueError for another dtype or shape, or an image too small to have a corner ring."""
    pixels = np.asarray(images)
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1] != 3:
        raise ValueError(f"frame_scores needs uint8 images (N, 3, H, W), got {pixels.dtype} {pixels.shape}")
    ring = corner_ring(*pixels.shape[2:])
    if not ring.any():
        raise ValueError(f"a {pixels.shape[2]}×{pixels.shape[3]} image has no pixel outside its inscribed circle")
    dark = pixels.max(axis=1) <= NEAR_BLACK
    return dark[:, ring].mean(axis=1, dtype=np.float64)


def has_frame(scores: np.ndarray, threshold: float) -> np.ndarray:
    """bool (N,): score ≥ threshold (`explain.frames.threshold`, a share of the corner ring in [0, 1])."""
    return np.asarray(scores) >= threshold


def score_store(lmdb_root: str | Path, manifest: str | Path | pd.DataFrame, splits: list[str] | None = None, *,
                batch: int, threshold: float) -> pd.DataFrame:
    """Frame scores of the images of `manifest` (optionally only `splits`) in the LMDB store `lmdb_root`:
    a frame with columns key, label, frame_score (float in [0, 1]), has_frame (bool: score ≥ `threshold`), in
    manifest order. Reads `batch` images at a time. Raises KeyError for a key the store lacks."""
    rows = manifest if isinstance(manifest, pd.DataFrame) else pd.read_csv(manifest, dtype=str,
                                                                            keep_default_na=False)
    if splits:
        rows = rows[rows["split"].isin(splits)]
    store, keys = LmdbImageStore(lmdb_root), rows["key"].tolist()
    scores = [frame_scores(read_images(store, keys[start:start + batch])) for start in range(0, len(keys), batch)]
    score = np.concatenate(scores) if scores else np.zeros(0)
    return pd.DataFrame({"key": keys, "label": rows["label"].tolist(), "frame_score": score,
                         "has_frame": has_frame(score, threshold)})


def drawn_frame_share(width: int, height: int, radius: float, x: float, y: float, resolution: int) -> float:
    """The share of the corner ring of the stored image (the centre square of a width × height drawing,
    resized to resolution²) that a frame drawn by `data.demo.draw` with circle (radius; centre x, y, in
    pixels of the drawing) blackens: the ring pixels whose centre maps to a drawing point ≥ radius from
    (x, y)."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    centres = (np.arange(resolution) + 0.5) * side / resolution - 0.5  # the drawing's pixel-index coordinates
    distance = np.hypot(left + centres[None, :] - x, top + centres[:, None] - y)
    return float((distance >= radius)[corner_ring(resolution, resolution)].mean())


def demo_frame_truth(truth_csv: str | Path, manifest: pd.DataFrame, resolution: int,
                     threshold: float) -> pd.DataFrame:
    """What the demo drawing code drew, per manifest row: key, drawn_frame (bool: a frame was drawn),
    drawn_share (share of the stored image's ring it covers, 0 without a frame) and visible (drawn_share ≥
    threshold). Rows are matched on image_id (and the drawing's size when an id occurs twice); images from
    outside the demo archives raise ValueError."""
    truth = pd.read_csv(truth_csv, dtype=str, keep_default_na=False)
    by_id = {image_id: group for image_id, group in truth.groupby("image_id")}
    out = []
    for row in manifest.itertuples():
        drawn = _truth_row(by_id, row)
        share = 0.0
        if drawn["frame"] == "True":
            share = drawn_frame_share(int(drawn["width"]), int(drawn["height"]), float(drawn["frame_radius"]),
                                      float(drawn["frame_x"]), float(drawn["frame_y"]), resolution)
        out.append({"key": row.key, "drawn_frame": drawn["frame"] == "True", "drawn_share": share})
    frame = pd.DataFrame(out, columns=["key", "drawn_frame", "drawn_share"])
    frame["visible"] = frame["drawn_share"] >= threshold
    return frame


def _truth_row(by_id: dict, row) -> pd.Series:
    candidates = by_id.get(row.image_id)
    if candidates is None:
        raise ValueError(f"image {row.image_id!r} (key {row.key}) is not in the demo truth: frame truth exists "
                         "only for the demo archives")
    if len(candidates) > 1 and hasattr(row, "original_width"):
        size = {str(row.original_width), str(row.original_height)}
        same = candidates[[{w, h} == size for w, h in zip(candidates["width"], candidates["height"])]]
        candidates = same if len(same) else candidates
    return candidates.iloc[0]


def frame_accuracy(scored: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Accuracy of `has_frame` (from `score_store`) against the drawn frames and against the visible ones
    (from `demo_frame_truth`), with the confusion counts of the visible truth."""
    both = scored.merge(truth, on="key", validate="one_to_one")
    predicted, visible = both["has_frame"].astype(bool), both["visible"].astype(bool)
    return {"images": len(both), "drawn_frames": int(both["drawn_frame"].sum()), "visible_frames": int(visible.sum()),
            "accuracy_drawn": float((predicted == both["drawn_frame"]).mean()) if len(both) else float("nan"),
            "accuracy_visible": float((predicted == visible).mean()) if len(both) else float("nan"),
            "true_positive": int((predicted & visible).sum()), "false_positive": int((predicted & ~visible).sum()),
            "false_negative": int((~predicted & visible).sum()), "true_negative": int((~predicted & ~visible).sum())}


def run_frame_score(lmdb_root: str | Path, manifest: str | Path, out_csv: str | Path, *, threshold: float,
                    batch: int, splits: list[str] | None = None, truth_csv: str | Path | None = None) -> dict:
    """`dermsynth explain frame-score`: writes `out_csv` (key, label, frame_score, has_frame at `threshold`; with
    `truth_csv`, the demo archives' demo_truth.csv, also drawn_frame, drawn_share, visible) and returns a summary:
    image and frame counts per label, the threshold and, with the truth, `frame_accuracy`. Reads `batch` images
    at a time (the verb's flags `--threshold`, default the schema's `explain.frames.threshold`, and `--batch`)."""
    rows = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    if splits:
        rows = rows[rows["split"].isin(splits)]
    scored = score_store(lmdb_root, rows, batch=batch, threshold=threshold)
    summary = {"images": len(scored), "threshold": threshold, "near_black": NEAR_BLACK,
               "frames_per_label": {label: [int(group["has_frame"].sum()), len(group)]
                                    for label, group in scored.groupby("label")}}
    if truth_csv:
        truth = demo_frame_truth(truth_csv, rows, LmdbImageStore(lmdb_root).resolution, threshold)
        summary["accuracy"] = frame_accuracy(scored, truth)
        scored = scored.merge(truth, on="key", how="left")
    write_csv(out_csv, scored)
    print(f"frame-score: {len(scored)} images, frames per label (framed, all) {summary['frames_per_label']}"
          + (f", accuracy {summary['accuracy']}" if truth_csv else ""), file=sys.stderr)
    return summary
