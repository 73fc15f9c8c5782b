"""Authenticity analysis (ISIC study, 4.3): distances and nearest neighbours against a brute-force
computation, memorisation flags on planted copies, edge/central cases, t-SNE, classifier embeddings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial.distance import cosine

from dermsynth.explain.authenticity import authenticity_table, embed, mark_cases, neighbours, tsne_3d


def _features(n=20, d=16, copies=(3, 7), seed=0):
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(n, d))
    projected = rng.normal(size=(n, d))
    for i in copies:  # a projection that is (almost) its target
        projected[i] = real[i] * 1.001 + rng.normal(scale=1e-4, size=d)
    return real, projected


def test_neighbours_equal_a_brute_force_computation():
    real, projected = _features(n=12, copies=(5,))
    found = neighbours(real, projected)
    everything = np.vstack([real, projected])
    for i in range(len(real)):
        distances = np.array([np.inf if j == i else cosine(real[i], everything[j]) for j in range(len(everything))])
        assert found["own"][i] == pytest.approx(cosine(real[i], projected[i]), abs=1e-12)
        assert found["nearest"][i] == distances.argmin()
        assert found["nearest_distance"][i] == pytest.approx(distances.min(), abs=1e-12)
        assert found["nearest_real"][i] == pytest.approx(distances[:len(real)].min(), abs=1e-12)
        to_projections = [cosine(real[i], p) for p in projected]
        assert found["rank"][i] == 1 + sum(d < to_projections[i] for d in to_projections)


def test_planted_copies_and_only_they_are_flagged():
    real, projected = _features(copies=(3, 7))
    keys = [f"k{i:02d}" for i in range(len(real))]
    labels = ["benign" if i % 2 else "malignant" for i in range(len(real))]
    probabilities = np.tile([[0.3, 0.7]], (len(real), 1))
    table = authenticity_table(keys, labels, real, projected, probabilities, ["benign", "malignant"])
    assert table.loc[table["memorisation_flag"], "key"].tolist() == ["k03", "k07"]
    flagged = table[table["memorisation_flag"]]
    assert (flagged["nearest_key"] == flagged["key"]).all() and (flagged["nearest_kind"] == "projection").all()
    assert (flagged["distance_to_projection"] < 1e-4).all() and (flagged["projection_rank"] == 1).all()
    assert (table.loc[~table["memorisation_flag"], "distance_to_projection"] > 0.1).all()
    assert table["predicted"].eq("malignant").all()
    assert table["p_label"].tolist() == [0.7 if label == "malignant" else 0.3 for label in labels]
    assert table["margin"].to_numpy() == pytest.approx(np.full(len(real), 0.4))


def test_edge_cases_have_the_smallest_margins_and_central_cases_sit_at_their_centroid():
    table = pd.DataFrame({"key": list("abcdef"), "margin": [0.9, 0.05, 0.5, 0.01, 0.7, 0.3],
                          "distance_to_class_centroid": [0.2, 0.0, 0.05, 0.3, 0.01, 0.4]})
    cases = mark_cases(table, 2)
    assert dict(zip(table["key"], cases)) == {"a": "", "b": "edge", "c": "central", "d": "edge", "e": "central",
                                              "f": ""}


def test_tsne_is_three_dimensional_and_seeded():
    real, projected = _features(n=10)
    features = np.vstack([real, projected])
    first, again = tsne_3d(features, 30, seed=1), tsne_3d(features, 30, seed=1)
    assert first.shape == (20, 3) and np.allclose(first, again)


def test_embeddings_are_the_pooled_features_the_head_classifies():
    import timm
    model = timm.create_model("resnet10t", pretrained=False, num_classes=2).eval()
    images = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8)
    features, probabilities = embed(model, images, 32, "cpu")
    # independently: resize, ImageNet-normalise, run the whole network, and pool its last feature map
    x = torch.nn.functional.interpolate(images.float(), size=(32, 32), mode="bilinear", antialias=True,
                                        align_corners=False) / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        pooled = model.forward_features(x).mean(dim=(2, 3))
        expected = model(x).softmax(dim=1)
    assert features.shape == (3, model.num_features)
    np.testing.assert_allclose(features, pooled.numpy(), atol=2e-2)  # uint8 vs float resize
    np.testing.assert_allclose(probabilities, expected.numpy(), atol=2e-2)
    assert probabilities.sum(axis=1) == pytest.approx(np.ones(3))


class _TopLeftDetector(torch.nn.Module):
    """Class 1's logit is the mean of the top-left quadrant's red channel; class 0's its negative."""

    def forward(self, x):
        quadrant = x[:, 0, : x.shape[2] // 2, : x.shape[3] // 2].mean(dim=(1, 2))
        return torch.stack([-quadrant, quadrant], dim=1)


def test_xrai_puts_the_attribution_where_the_decision_is_made(tmp_path):
    from dermsynth.explain.xrai import xrai_figure, xrai_heatmaps
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=generator)
    heatmaps = xrai_heatmaps(_TopLeftDetector(), images, [1, 1], 32, "cpu", steps=8)
    assert heatmaps.shape == (2, 32, 32)
    for heatmap in heatmaps:
        inside = heatmap[:16, :16].mean()
        outside = np.concatenate([heatmap[16:].ravel(), heatmap[:16, 16:].ravel()]).mean()
        assert inside > 2 * outside
    xrai_figure(images, heatmaps, ["a", "b"], tmp_path / "xrai.png", heading="XRAI — random-init classifier")
    assert (tmp_path / "xrai.png").stat().st_size > 5_000
    from dermsynth.outputs import read_figure_labels
    assert read_figure_labels(tmp_path / "xrai.png")["title"] == "XRAI — random-init classifier"
