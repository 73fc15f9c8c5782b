"""Views of the authenticity embeddings (issue 17, part 3): TensorBoard Projector TSVs and the 3-D t-SNE as HTML."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from dermsynth.explain.embedding_views import (projector_metadata, tsne_figure_3d, write_embedding_views,
                                               write_projector_tsv)


def _authenticity(n=5, d=7, seed=0):
    rng = np.random.default_rng(seed)
    keys = [f"ISIC_{i:07d}" for i in range(n)]
    table = pd.DataFrame({"key": keys, "label": ["benign", "malignant"] * (n // 2) + ["benign"] * (n % 2),
                          "predicted": "benign", "case": ["edge"] + [""] * (n - 2) + ["central"]})
    real, projected = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    coordinates = pd.DataFrame({"key": keys * 2, "label": list(table["label"]) * 2,
                                "kind": ["real"] * n + ["projection"] * n, "x": rng.normal(size=2 * n),
                                "y": rng.normal(size=2 * n), "z": rng.normal(size=2 * n)})
    return table, real, projected, coordinates


def test_projector_tsvs_have_one_row_per_embedding_and_a_metadata_header(tmp_path):
    table, real, projected, _ = _authenticity()
    embeddings = np.vstack([real, projected])
    tensors, metadata = write_projector_tsv(embeddings, projector_metadata(table), tmp_path)
    lines = tensors.read_text().splitlines()
    assert len(lines) == 10 and all(len(line.split("\t")) == 7 for line in lines)  # no header, D columns
    np.testing.assert_allclose(np.loadtxt(tensors, delimiter="\t"), embeddings, rtol=1e-5)
    rows = metadata.read_text().splitlines()
    assert rows[0].split("\t") == ["key", "class", "kind", "case", "predicted"] and len(rows) == 11
    read = pd.read_csv(metadata, sep="\t", dtype=str, keep_default_na=False)
    assert read["key"].tolist() == table["key"].tolist() * 2
    assert read["kind"].tolist() == ["real"] * 5 + ["projection"] * 5
    assert read["case"].tolist()[:5] == table["case"].tolist()


def test_projector_tsvs_keep_columns_in_place_and_refuse_what_the_projector_cannot_load(tmp_path):
    meta = pd.DataFrame({"key": ["a\tb", "c\nd"], "class": ["x", "y"]})
    _, metadata = write_projector_tsv(np.ones((2, 3)), meta, tmp_path)
    assert metadata.read_text().splitlines() == ["key\tclass", "a b\tx", "c d\ty"]
    with pytest.raises(ValueError, match="N metadata rows"):
        write_projector_tsv(np.ones((3, 3)), meta, tmp_path)
    with pytest.raises(ValueError, match="NaN"):
        write_projector_tsv(np.array([[1.0, np.nan], [0, 0]]), meta, tmp_path)


def test_tsne_figure_has_a_trace_per_class_and_kind_with_hover_text_and_pair_lines():
    _, _, _, coordinates = _authenticity()
    figure = tsne_figure_3d(coordinates, "t")
    lines, *points = figure.data
    assert lines.mode == "lines" and np.isnan(lines.x).sum() == 5 and len(lines.x) == 15  # 5 pairs, gaps between
    assert sorted(trace.name for trace in points) == ["benign, projection", "benign, real", "malignant, projection",
                                                      "malignant, real"]
    assert sum(len(trace.x) for trace in points) == 10
    benign_real = next(trace for trace in points if trace.name == "benign, real")
    assert benign_real.text[0] == "ISIC_0000000<br>class: benign<br>kind: real"


def test_embedding_views_write_the_three_files_with_every_key(tmp_path):
    table, real, projected, coordinates = _authenticity()
    written = write_embedding_views(table, real, projected, coordinates, "cgan: t-SNE", tmp_path)
    assert written["tensors"] == tmp_path / "projector" / "tensors.tsv"
    html = written["html"].read_text()
    assert all(key in html for key in table["key"])
    assert not re.search(r"<script[^>]*\bsrc=", html) and len(html) > 1_000_000  # plotly.js inside: works offline
    data = json.loads(re.search(r"Plotly\.newPlot\(\s*\"[^\"]+\",\s*(\[.*?\]),\s*\{", html, re.S).group(1))
    assert sum(len(trace["text"]) for trace in data if trace["mode"] == "markers") == 10  # one hover text a point


def test_the_authenticity_job_writes_the_views_of_its_embeddings(ingested_ham, tmp_path):
    """run_authenticity end to end on a tiny generator, random latents of six demo images and an untrained
    classifier: tsne.html and the Projector TSVs hold every image, in authenticity.csv's order."""
    from dataclasses import asdict

    import torch

    from dermsynth.classify.train import Recipe, build_model
    from dermsynth.config import schema_defaults
    from dermsynth.explain.authenticity import run_authenticity
    from dermsynth.explain.options import AuthenticityOptions
    from dermsynth.fingerprint import StateMismatchError, tensors_digest
    from dermsynth.gan.networks import Generator
    from dermsynth.labels import scheme_classes
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, img_resolution=16, channel_base=256, channel_max=16).eval()
    network = tmp_path / "network-final.pt"
    torch.save({"options": json.dumps({"network": {"z_dim": 16, "w_dim": 16, "channel_base": 256,
                                                   "channel_max": 16}}), "G_ema": G.state_dict()}, network)
    rows = pd.read_csv(ingested_ham / "ingested.csv", dtype=str, keep_default_na=False).iloc[:6]
    np.savez(tmp_path / "projection.npz", keys=rows["key"].to_numpy(str), labels=rows["label"].to_numpy(str),
             ws=torch.randn(6, G.num_ws, 16).numpy(), generator=np.array(tensors_digest(G.state_dict())),
             **{f"noise{i}": torch.randn(6, 1, r, r).numpy() for i, r in enumerate(G.synthesis.noise_resolutions())})
    recipe = Recipe.from_section({**schema_defaults("classifiers.ham10000.recipe"), "input_resolution": 16,
                                  "pretrained": False})
    classes = list(scheme_classes("ham7"))
    model, _ = build_model("resnet10t", len(classes), recipe)
    (tmp_path / "classifier").mkdir()
    torch.save({"model": model.state_dict(), "architecture": "resnet10t", "classes": classes,
                "recipe": json.dumps(asdict(recipe)), "weights": "random-init"}, tmp_path / "classifier" / "best.pt")
    options = AuthenticityOptions(gan="tiny", edge_cases=1, perplexity=5.0, xrai_images=1, xrai_steps=2, batch=4,
                                  seed=0)
    out = tmp_path / "out"
    run_authenticity(options, network, tmp_path / "projection.npz", ingested_ham / "lmdb", tmp_path / "classifier",
                     out, device="cpu")
    table = pd.read_csv(out / "authenticity.csv", dtype=str, keep_default_na=False)
    metadata = pd.read_csv(out / "projector" / "metadata.tsv", sep="\t", dtype=str, keep_default_na=False)
    tensors = np.loadtxt(out / "projector" / "tensors.tsv", delimiter="\t")
    assert metadata["key"].tolist() == table["key"].tolist() * 2 and len(tensors) == 12
    assert metadata["case"].tolist()[:6] == table["case"].tolist()
    html = (out / "tsne.html").read_text()
    assert all(key in html for key in table["key"])
    other = Generator(z_dim=16, w_dim=16, img_resolution=16, channel_base=256, channel_max=16).eval()  # other weights
    torch.save({"options": torch.load(network, weights_only=True)["options"],
                "G_ema": other.state_dict()}, tmp_path / "other.pt")
    with pytest.raises(StateMismatchError, match=r"projection.npz was made for another generator"):
        run_authenticity(options, tmp_path / "other.pt", tmp_path / "projection.npz", ingested_ham / "lmdb",
                         tmp_path / "classifier", tmp_path / "out2", device="cpu")
    assert not (tmp_path / "out2").exists()  # refused before the output folder is made
