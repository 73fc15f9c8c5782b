"""Frame score (issue 17, part 1): validated on the demo archives, whose frames the drawing code records."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from dermsynth.config import schema_defaults
from dermsynth.data.demo.draw import View, render, sample_lesion
from dermsynth.explain.frames import corner_ring, demo_frame_truth, frame_accuracy, frame_scores, score_store

FRAME_THRESHOLD = schema_defaults("explain.frames")["threshold"]  # the schema's: 2 % of the corner ring

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
    scored = score_store(root / "lmdb", rows, batch=256, threshold=FRAME_THRESHOLD)
    truth = demo_frame_truth(demo_root / "demo" / "demo_truth.csv", rows, 64, FRAME_THRESHOLD)
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
    assert main(["explain", "frame-score", "--lmdb", str(ingested_ham / "lmdb"), "--manifest", str(manifest), "--out", str(out),
                 "--truth", str(demo_root / "demo" / "demo_truth.csv")]) == 0
    table = pd.read_csv(out)
    assert list(table.columns[:4]) == ["key", "label", "frame_score", "has_frame"]
    assert len(table) == len(pd.read_csv(manifest)) and table["frame_score"].between(0, 1).all()
    assert "accuracy_visible" in capsys.readouterr().err


def _ring_count_from_first_principles(height: int, width: int) -> int:
    """Pixels (row i, column j) whose centre (j + ½, i + ½) is farther than min(H, W)/2 from the image centre
    (W/2, H/2), counted in exact integers: (2j + 1 − W)² + (2i + 1 − H)² > min(H, W)²."""
    side = min(height, width)
    return sum((2 * j + 1 - width) ** 2 + (2 * i + 1 - height) ** 2 > side ** 2
               for i in range(height) for j in range(width))


@pytest.mark.parametrize(("height", "width", "by_hand"), [(1, 1, 0), (2, 2, 0), (3, 3, 0), (4, 4, 4), (2, 4, 4),
                                                          (5, 5, 4)])
def test_corner_ring_small_sizes_counted_by_hand(height, width, by_hand):
    """Issue 27, kind 8 — the ring pinned independently of its implementation. 4×4: the corner centres are
    (±1.5, ±1.5) from the centre, √4.5 > 2; their neighbours (±1.5, ±0.5) are √2.5 < 2. 3×3: corners √2 < 1.5.
    2×4: radius 1, the outer columns' centres are √2.5 away. 5×5: corners √8 > 2.5, (2, 1) is √5 < 2.5."""
    assert int(corner_ring(height, width).sum()) == by_hand == _ring_count_from_first_principles(height, width)


@pytest.mark.parametrize(("height", "width"), [(16, 16), (17, 17), (64, 64), (32, 48), (45, 30), (256, 256)])
def test_corner_ring_matches_the_integer_count_and_is_symmetric(height, width):
    ring = corner_ring(height, width)
    assert int(ring.sum()) == _ring_count_from_first_principles(height, width)
    assert np.array_equal(ring, ring[::-1]) and np.array_equal(ring, ring[:, ::-1])  # the four corners alike
    assert ring[0, 0] and not ring[height // 2, width // 2]


def test_corner_ring_share_tends_to_one_minus_pi_over_four():
    """The docstring's 1 − π/4 ≈ 21.5 % of a square image (the pixel grid's error shrinks like 1/n)."""
    share = corner_ring(1024, 1024).mean()
    assert abs(share - (1 - np.pi / 4)) < 2e-3
