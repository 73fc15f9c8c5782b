"""Every figure says what it shows (issue 29, item 4): each figure function on small inputs, its labels read back
from the PNG's metadata (`outputs.read_figure_labels`), the colours from the plotting call's artists."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dermsynth.figures import GRID_DPI, figure_texts, image_grid, pyplot as plt
from dermsynth.gan.networks import Generator
from dermsynth.metrics.classification import classification_report
from dermsynth.outputs import read_figure_labels, save_figure, tile, write_png

NETWORK = {"z_dim": 16, "w_dim": 16, "channel_base": 256, "channel_max": 16, "mapping_layers": 2}


def _labels(path) -> dict:
    labels = read_figure_labels(path)
    assert labels is not None, f"{path} holds no labels"
    return labels


def _network(path, c_dim: int = 0, classes=(), kimg: float | None = None):
    torch.manual_seed(0)
    G = Generator(c_dim=c_dim, img_resolution=16, **NETWORK).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"options": json.dumps({"network": NETWORK}), "G_ema": G.state_dict()}, path)
    info = {"classes": list(classes), "trained_on_classes": list(classes)}
    path.with_suffix(".json").write_text(json.dumps(info if kimg is None else {**info, "kimg": kimg}))
    return G


def _find(picture: np.ndarray, part: np.ndarray) -> tuple[int, int] | None:
    """Where `part` (h, w, 3) lies unchanged in `picture`, or None."""
    h, w, _ = part.shape
    for y in range(picture.shape[0] - h + 1):
        for x in range(picture.shape[1] - w + 1):
            if np.array_equal(picture[y:y + h, x:x + w], part):
                return y, x
    return None


def test_image_grid_labels_every_row_and_column_and_keeps_the_pixels(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 3, 16, 16), dtype=np.uint8)
    figure = image_grid(images, ["first row", "second\nrow"], ["a", "b", "c"], "a title", row_title="rows",
                        column_title="columns")
    save_figure(tmp_path / "grid.png", figure)
    plt.close(figure)
    labels = _labels(tmp_path / "grid.png")
    axes, = labels["axes"]
    assert labels["title"] == "a title" and axes["yticklabels"] == ["first row", "second\nrow"]
    assert axes["xticklabels"] == ["a", "b", "c"] and (axes["ylabel"], axes["xlabel"]) == ("rows", "columns")
    picture = np.asarray(Image.open(tmp_path / "grid.png").convert("RGB"))
    assert _find(picture, tile(images)) is not None  # one image pixel per PNG pixel, not resampled
    assert figure.dpi == GRID_DPI
    with pytest.raises(ValueError, match="2 row labels"):
        image_grid(images[:1], ["one", "two"], ["a", "b", "c"], "t")


def test_a_data_image_has_no_labels_and_an_svg_figure_is_written(tmp_path):
    write_png(tmp_path / "sample.png", np.zeros((4, 4, 3), np.uint8))
    assert read_figure_labels(tmp_path / "sample.png") is None
    figure, axes = plt.subplots()
    axes.set_title("λ → ψ−1")  # not Latin-1: escaped in the tEXt chunk, read back unchanged
    save_figure(tmp_path / "f.png", figure)
    save_figure(tmp_path / "f.svg", figure)
    plt.close(figure)
    assert _labels(tmp_path / "f.png")["title"] == "λ → ψ−1" and "svg" in (tmp_path / "f.svg").read_text()[:300]


def test_sefa_preview_names_direction_eigenvalue_sample_and_magnitude(tmp_path):
    from dermsynth.latent.sefa import PreviewSettings, factorize, preview_figure, preview_grid
    torch.manual_seed(0)
    G = Generator(img_resolution=16, **NETWORK).eval()
    factors = factorize(G, "coarse")
    preview = PreviewSettings(directions=2, samples=2, magnitude=3.0, steps=3, truncation_psi=0.7, seed=5)
    figure = preview_figure(G, factors, preview, "tiny/network-final.pt")
    save_figure(tmp_path / "sefa.png", figure)
    plt.close(figure)
    labels = _labels(tmp_path / "sefa.png")
    rows, columns = labels["axes"][0]["yticklabels"], labels["axes"][0]["xticklabels"]
    assert len(rows) == 4 and [float(c) for c in columns] == [-3.0, 0.0, 3.0]
    for index, row in enumerate(rows):
        direction, sample = divmod(index, 2)
        found = re.fullmatch(r"direction (\d+), eigenvalue (\S+)\nsample (\d+) of 2", row)
        assert found, row
        assert (int(found[1]), int(found[3])) == (direction, sample + 1)
        assert float(found[2]) == pytest.approx(factors["eigenvalues"][direction], rel=1e-2)
    assert all(word in labels["title"] for word in ("tiny/network-final.pt", "coarse", "ψ=0.7", "seed 5"))
    picture = np.asarray(Image.open(tmp_path / "sefa.png").convert("RGB"))
    assert _find(picture, preview_grid(G, factors, preview)) is not None  # the figure shows the grid's pixels


def test_snapshot_grid_names_class_per_row_seed_per_column_and_kimg(tmp_path):
    from dermsynth.gan.run import sample_grid
    torch.manual_seed(0)
    G = Generator(c_dim=3, img_resolution=16, **NETWORK).eval()
    sample_grid(G, tmp_path / "fakes.png", ["mel", "nv", "bcc"], "cpu", "tiny: G_ema at 0.016 kimg (step 4)")
    labels = _labels(tmp_path / "fakes.png")
    assert labels["axes"][0]["yticklabels"] == ["mel", "nv", "bcc"]
    assert labels["axes"][0]["xticklabels"] == [f"seed {s}" for s in range(8)] and "0.016 kimg" in labels["title"]
    unconditional = Generator(img_resolution=16, **NETWORK).eval()
    sample_grid(unconditional, tmp_path / "u.png", [], "cpu", "u at 1 kimg")
    assert _labels(tmp_path / "u.png")["axes"][0]["yticklabels"] == ["seeds 0–7", "seeds 8–15", "seeds 16–23",
                                                                    "seeds 24–31"]


def test_sample_sheet_names_class_seed_and_kimg(tmp_path):
    from dermsynth.gan.generate import sample_sheet
    _network(tmp_path / "cgan" / "network-final.pt", c_dim=2, classes=("benign", "malignant"), kimg=2.5)
    sample_sheet(tmp_path / "cgan" / "network-final.pt", tmp_path / "samples.png", 4, 1, 0.7, "cpu")
    labels = _labels(tmp_path / "samples.png")
    assert labels["axes"][0]["yticklabels"] == ["benign", "malignant"]
    assert labels["axes"][0]["xticklabels"] == ["seed 0", "seed 1", "seed 2", "seed 3"]
    assert "cgan/network-final.pt (2.5 kimg)" in labels["title"] and "ψ=0.7" in labels["title"]


def _report(true: list[int], predicted: list[int], classes: list[str]) -> dict:
    return classification_report(true, np.eye(len(classes))[predicted], classes)


@pytest.mark.parametrize("weights", ["random-init(seed=0)", "imagenet"])
def test_confusion_matrix_says_row_normalised_n_per_class_and_random_init(tmp_path, weights):
    from dermsynth.classify.run import confusion_figure
    classes = ["mel", "nv", "bcc"]
    true, predicted = [0, 0, 1, 1, 1, 1, 2], [0, 1, 1, 1, 0, 1, 2]
    confusion_figure(_report(true, predicted, classes), "ham10000 baseline", tmp_path / "c.png", weights)
    labels = _labels(tmp_path / "c.png")
    matrix, colour_bar = labels["axes"]
    assert matrix["yticklabels"] == [f"{c} (n={true.count(k)})" for k, c in enumerate(classes)]
    assert colour_bar["ylabel"] == "row-normalised (recall)" and "row-normalised" in labels["title"]
    assert ("random-init" in labels["title"]) == weights.startswith("random-init")
    assert "0.75\n3" in labels["texts"]  # nv: 3 of its 4 images predicted nv


def test_recall_chart_gives_n_per_class_and_random_init(tmp_path):
    from dermsynth.classify.tables import recall_figure
    classes = ["mel", "nv"]
    true = [0, 0, 0, 1, 1]
    models = [{"scenario": scenario, "architecture": "resnet10t", "classes": classes, "real_weights": real,
               "test_recomputed": _report(true, predicted, classes)}
              for scenario, predicted, real in (("baseline", [0, 1, 1, 1, 1], True), ("SA-2k", [0, 0, 1, 1, 0], False))]
    recall_figure(models, "resnet10t", ["SA-2k"], tmp_path / "recall.png")
    labels = _labels(tmp_path / "recall.png")
    assert labels["axes"][0]["xticklabels"] == ["mel\n(n=3)", "nv\n(n=2)"]
    assert "random-init" in labels["title"] and labels["axes"][0]["legend"] == ["baseline", "SA-2k"]


def test_fid_curve_has_units_feature_space_and_weights(tmp_path):
    from dermsynth.metrics.gan_eval import _plot_curve
    table = pd.DataFrame({"kimg": [0.5, 1.0], "fid": [300.0, 250.0], "fd_lite0": [3.0, 2.0]})
    _plot_curve(table, "tiny", tmp_path / "fid.png", False, True)
    fid, lite0 = _labels(tmp_path / "fid.png")["axes"]
    assert "kimg" in fid["xlabel"] and "Inception" in fid["ylabel"] and "random-init Inception" in fid["title"]
    assert "Lite0" in lite0["ylabel"] and "ImageNet weights" in lite0["title"]


def test_federated_figure_draws_each_curve_in_one_colour_in_every_panel(tmp_path, monkeypatch):
    from dermsynth.federated import evaluate
    from dermsynth.federated.evaluate import POOLED, plot_curves
    drawn = []
    real_save = evaluate.save_figure
    monkeypatch.setattr(evaluate, "save_figure", lambda path, figure: (drawn.append(figure), real_save(path, figure)))
    rows = [{"reference": reference, "model": model, "iterations": it, "fid": 100.0 - it,
             "inception_weights": "random-init(seed=0)", "inception_real_weights": False}
            for reference in ("h1", "h2", POOLED) for model in ("federated", f"alone:{reference}", "central")
            for it in (2, 4) if model != f"alone:{POOLED}"]

    class Options:
        run, hospitals = "isic", ["h1", "h2"]

    plot_curves(pd.DataFrame(rows), Options, tmp_path / "fed.png")
    colours = {}
    for axes in drawn[0].axes:
        for line in axes.get_lines():
            colours.setdefault(line.get_label(), set()).add(line.get_color())
    assert set(colours) == {"federated", "alone", "central"} and all(len(c) == 1 for c in colours.values())
    assert len(set.union(*colours.values())) == 3  # central is not drawn in alone's colour in the pooled panel
    labels = _labels(tmp_path / "fed.png")
    assert labels["legend"] == ["federated", "alone", "central"] and "random-init" in labels["title"]


def test_message_figure_title_is_its_message(tmp_path):
    from dermsynth.explain.message import message_figure
    message_figure("no image to explain", tmp_path / "m.png")
    assert _labels(tmp_path / "m.png")["title"] == "no image to explain"


def test_figure_texts_reads_automatic_ticks():
    figure, axes = plt.subplots()
    axes.plot([0, 10], [0, 1])
    texts = figure_texts(figure)
    plt.close(figure)
    assert texts["axes"][0]["xticklabels"] and texts["title"] == ""
