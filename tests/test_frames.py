"""Frame score (issue 17, part 1): validated on the demo archives, whose frames the drawing code records."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from dermsynth.data.demo.draw import View, render, sample_lesion
from dermsynth.explain.frames import (FRAME_THRESHOLD, corner_ring, demo_frame_truth, frame_accuracy, frame_scores,
                                      score_store)

# Floors on the tests' small demo (HAM10000 + ISIC 2018: 118 images, 9 frames; ISIC: 127 images, 20 drawn
# frames of which 14 reach the stored centre square). Measured: 1.0, 1.0, 0.95, 1.0.
HAM_FLOOR, ISIC_DRAWN_FLOOR, VISIBLE_FLOOR = 0.97, 0.90, 0.98


@pytest.fixture(scope="module")
def ingested_isic(demo_cfg, tmp_path_factory):
    from dermsynth.data.ingest import ingest_dataset
    out = tmp_path_factory.mktemp("ingested-isic-frames")
    ingest_dataset(demo_cfg, "isic", out, workers=1)
    return out


def _scored(root, demo_root):
    rows = pd.read_csv(root / "ingested.csv", dtype=str, keep_default_na=False)
    scored = score_store(root / "lmdb", rows)
    truth = demo_frame_truth(demo_root / "demo" / "demo_truth.csv", rows, 64)
    return scored, truth


def test_frame_score_finds_the_demo_frames_of_ham10000(ingested_ham, demo_root):
    scored, truth = _scored(ingested_ham, demo_root)
    accuracy = frame_accuracy(scored, truth)
    assert accuracy["drawn_frames"] >= 5 and accuracy["images"] == len(scored)
    assert accuracy["accuracy_drawn"] >= HAM_FLOOR and accuracy["accuracy_visible"] >= VISIBLE_FLOOR


def test_frame_score_finds_the_visible_demo_frames_of_isic(ingested_isic, demo_root):
    """ISIC 2020's wide photographs: some frames lie outside the stored centre square (drawn, not visible)."""
    scored, truth = _scored(ingested_isic, demo_root)
    accuracy = frame_accuracy(scored, truth)
    assert accuracy["visible_frames"] >= 5
    assert accuracy["accuracy_drawn"] >= ISIC_DRAWN_FLOOR and accuracy["accuracy_visible"] >= VISIBLE_FLOOR


def test_frame_score_measures_the_drawn_frame_share(ingested_ham, ingested_isic, demo_root):
    """Not only the right side of the threshold: the score is the share of the ring the drawn frame covers
    (a little more: the frame's fade inside its circle is dark too)."""
    for root in (ingested_ham, ingested_isic):
        both = pd.merge(*_scored(root, demo_root), on="key")
        framed = both[both["drawn_frame"]]
        difference = framed["frame_score"] - framed["drawn_share"]
        assert difference.between(-0.02, 0.08).all(), framed
        assert (both.loc[~both["drawn_frame"], "frame_score"] < FRAME_THRESHOLD).all()


def _square(pixels: np.ndarray, resolution: int = 64) -> np.ndarray:
    h, w = pixels.shape[:2]
    side = min(h, w)
    left, top = (w - side) // 2, (h - side) // 2
    square = cv2.resize(pixels[top:top + side, left:left + side], (resolution, resolution),
                        interpolation=cv2.INTER_AREA)
    return square.transpose(2, 0, 1)


@pytest.mark.parametrize("skin_type", [0, 5])
def test_the_same_image_with_and_without_a_frame_separates(skin_type):
    """A hand-made pair: one drawn photograph (the darkest skin type too), once without and once with its frame."""
    lesion = sample_lesion("mel", np.random.default_rng(5), skin_type)
    plain = dict(width=600, height=450, hair=2, seed=123)
    without = _square(render(lesion, View(**plain)))
    framed_view = View(**plain, frame=True)
    with_frame = _square(render(lesion, framed_view))
    scores = frame_scores(np.stack([without, with_frame]))
    assert scores[0] < FRAME_THRESHOLD <= scores[1]
    assert scores[1] > 0.05 and framed_view.artifacts["frame"]["radius"] > 0


def test_a_black_corner_mask_scores_its_share_of_the_ring():
    image = np.full((1, 3, 32, 32), 128, np.uint8)
    ring = corner_ring(32, 32)
    image[0, :, :16, :16] = np.where(ring[:16, :16], 0, 128)  # blacken the top-left quarter of the ring
    assert frame_scores(image)[0] == pytest.approx(0.25)
    assert frame_scores(np.zeros((2, 3, 8, 12), np.uint8)).tolist() == [1.0, 1.0]


def test_frame_scores_refuse_what_they_cannot_score():
    with pytest.raises(ValueError, match="uint8"):
        frame_scores(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        frame_scores(np.zeros((3, 8, 8), np.uint8))


def test_frame_score_verb_writes_one_row_per_image(ingested_ham, demo_root, tmp_path, capsys):
    from dermsynth.cli import main
    out = tmp_path / "frames.csv"
    manifest = ingested_ham / "ingested.csv"
    assert main(["frame-score", "--lmdb", str(ingested_ham / "lmdb"), "--manifest", str(manifest), "--out", str(out),
                 "--truth", str(demo_root / "demo" / "demo_truth.csv")]) == 0
    table = pd.read_csv(out)
    assert list(table.columns[:4]) == ["key", "label", "frame_score", "has_frame"]
    assert len(table) == len(pd.read_csv(manifest)) and table["frame_score"].between(0, 1).all()
    assert "accuracy_visible" in capsys.readouterr().err
