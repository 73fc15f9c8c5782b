"""Frame removal with SeFa (issue 17, part 1): the direction ranking, the frameless set, the frame accuracy table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from dermsynth.config import schema_defaults
from dermsynth.errors import ConfigError, DermsynthError
from dermsynth.fingerprint import tensors_digest
from dermsynth.explain.frame_removal import (frame_accuracy_table, frameless_set, load_frame_moves, outside_ring,
                                             run_frame_directions)
from dermsynth.explain.frames import corner_ring, frame_scores
from dermsynth.explain.options import FrameDirectionsOptions, FramelessSetOptions
from dermsynth.gan.networks import Generator
from dermsynth.latent.sefa import factorize

FRAME_THRESHOLD = schema_defaults("explain.frames")["threshold"]  # the schema's: 2 % of the corner ring
NETWORK = {"z_dim": 8, "w_dim": 8, "channel_base": 64, "channel_max": 4, "mapping_layers": 2}
FRAME_DIRECTION = 3  # the w axis that draws the frame


def frame_generator(frame_bias: float = 2.0, seed: int = 0) -> tuple[Generator, torch.Tensor]:
    """A 16² generator whose weights are set so that SeFa's top direction d draws the frame: the 4² constant
    holds a corner mask (channel 0) and a centre mask (channel 1); b4.conv1 passes them through; b4's toRGB
    darkens the corners by its style 0 (affine row along d, bias `frame_bias`) and colours the centre by style 1
    (a random row: the lesion changes along other directions); later blocks add nothing. Every b4 style row
    but one lies along d, so d is the top direction. Moving along +d draws the frame, along −d removes it; with
    frame_bias 2 every image has a frame, with −2 none."""
    torch.manual_seed(seed)
    G = Generator(img_resolution=16, **NETWORK).eval()
    d = torch.zeros(8)
    d[FRAME_DIRECTION] = 1.0
    b4 = G.synthesis.blocks[0]
    with torch.no_grad():
        corner, centre = torch.zeros(4, 4), torch.zeros(4, 4)
        corner[0, 0] = corner[0, 3] = corner[3, 0] = corner[3, 3] = 1
        centre[1:3, 1:3] = 1
        b4.const.zero_()
        b4.const[0], b4.const[1] = corner, centre
        b4.conv1.weight.zero_()
        for channel in range(4):
            b4.conv1.weight[channel, channel, 1, 1] = 1
        b4.conv1.noise_strength.zero_()
        b4.conv1.bias.zero_()
        b4.conv1.affine.weight.copy_(0.01 * d.repeat(4, 1))
        b4.torgb.affine.weight.copy_(2.0 * d.repeat(4, 1))
        b4.torgb.affine.weight[1] = torch.randn(8)
        b4.torgb.affine.bias.fill_(1.0)
        b4.torgb.affine.bias[0] = frame_bias
        b4.torgb.weight.zero_()
        b4.torgb.weight[:, 0, 0, 0] = -3.0
        b4.torgb.weight[:, 1, 0, 0] = torch.tensor([0.8, -0.5, -0.5])
        b4.torgb.bias.fill_(0.6)
        for block in G.synthesis.blocks[1:]:
            block.torgb.weight.zero_()
            block.torgb.bias.zero_()
    return G, d


def _save(G, path, classes=("benign", "malignant"), trained_on=("malignant",)):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"options": json.dumps({"network": NETWORK}), "G_ema": G.state_dict()}, path)
    path.with_suffix(".json").write_text(json.dumps({"classes": list(classes), "trained_on_classes": list(trained_on)}))
    return path


def _sefa(G, path):
    factors = factorize(G, "all")
    np.savez(path, directions=factors["directions"], eigenvalues=factors["eigenvalues"],
             ws_indices=np.array(factors["ws_indices"]), layer_names=np.array(factors["layer_names"]),
             generator=np.array(tensors_digest(G.state_dict())))  # as `dermsynth latent sefa` records it
    return factors


def _directions_options(**changes):
    settings = {"gan": "mal_gan", "class_name": "malignant", "layer_range": "all", "latents": 12, "directions": 4,
                "magnitudes": [2.0, 4.0], "choose": 2, "lpips_weight": 0.5, "lpips_max": 0.5,
                "threshold": FRAME_THRESHOLD, "truncation_psi": 1.0, "batch": 16, "seed": 0}
    return FrameDirectionsOptions(**{**settings, **changes})


@pytest.fixture(scope="module")
def framed(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames")
    G, d = frame_generator()
    network = _save(G, root / "mal_gan" / "network-final.pt")
    factors = _sefa(G, root / "sefa-all.npz")
    return G, d, network, root / "sefa-all.npz", factors


def test_the_generator_draws_a_frame_along_its_top_direction(framed):
    """The construction holds: d is SeFa's top direction, and the images have frames that −d takes away."""
    G, d, _, _, factors = framed
    assert abs(factors["directions"][0] @ d.numpy()) > 0.95
    from dermsynth.explain.frame_removal import mapped, synthesize
    from dermsynth.latent.sefa import apply_direction
    ws = mapped(G, list(range(8)), None, 1.0, "cpu")
    assert (frame_scores(synthesize(G, ws, 8).numpy()) >= FRAME_THRESHOLD).all()
    removed = synthesize(G, apply_direction(ws, d, -4.0, factors["ws_indices"]), 8)
    assert (frame_scores(removed.numpy()) < FRAME_THRESHOLD).all()


def test_the_frame_direction_is_ranked_first_with_the_sign_that_removes_it(framed, tmp_path):
    G, d, network, sefa, factors = framed
    out = tmp_path / "directions.csv"
    summary = run_frame_directions(_directions_options(), network, sefa, out, tmp_path / "directions.png",
                                   tmp_path / "proposal.yaml", device="cpu")
    table = pd.read_csv(out)
    assert len(table) == 4 * 2 * 2 and set(table["rank"]) == set(range(1, 9))
    first = table[(table["rank"] == 1) & table["best"]].iloc[0]
    side = np.sign(factors["directions"][0] @ d.numpy())  # SVD's sign of the top direction is arbitrary
    assert first["direction"] == 0 and np.sign(first["magnitude"]) == -side  # towards −d: the frame goes
    assert first["frame_drop"] > 0.5 and first["removed"] == 1.0
    wrong_side = table[(table["direction"] == 0) & (np.sign(table["magnitude"]) == side)]
    assert (wrong_side["frame_drop"] <= 0).all()
    proposal = load_frame_moves(tmp_path / "proposal.yaml", "mal_gan", "all")
    assert proposal["moves"][0]["direction"] == 0 and proposal["moves"][0]["magnitude"] == first["magnitude"]
    assert len(proposal["moves"]) == 2 and len({m["direction"] for m in proposal["moves"]}) == 2
    assert summary["framed_latents"] == 12 and summary["chosen"][0]["direction"] == 0
    assert (tmp_path / "directions.png").stat().st_size > 5_000 and (tmp_path / "directions.json").exists()


def test_lpips_outside_the_ring_ignores_the_ring():
    original = torch.full((1, 3, 16, 16), 128, dtype=torch.uint8)
    moved = original.clone()
    ring = torch.from_numpy(corner_ring(16, 16))
    moved[:, :, ring] = 0  # only the frame changed
    assert torch.equal(outside_ring(original, moved), original)
    moved[:, :, 8, 8] = 0  # and the lesion
    assert not torch.equal(outside_ring(original, moved), original)


def _set_options(**changes):
    settings = {"gan": "mal_gan", "layer_range": "all", "generators": {"benign": "ben_gan", "malignant": "mal_gan"},
                "images": 5, "tries_per_image": 4, "framed_only": True, "threshold": FRAME_THRESHOLD,
                "truncation_psi": 1.0, "batch": 8, "seed": 0}
    return FramelessSetOptions(**{**settings, **changes})


def _moves(path, magnitude, gan="mal_gan", layer_range="all"):
    path.write_text(yaml.safe_dump({"gan": gan, "layer_range": layer_range,
                                    "moves": [{"direction": 0, "magnitude": magnitude}]}))
    return path


def test_frameless_set_keeps_exactly_n_frameless_images_per_class(framed, tmp_path):
    G, d, network, sefa, factors = framed
    side = float(np.sign(factors["directions"][0] @ d.numpy()))
    benign = _save(frame_generator(frame_bias=-2.0)[0], tmp_path / "ben_gan" / "network-final.pt",
                   trained_on=("benign",))
    out = tmp_path / "frameless"
    summary = frameless_set(_set_options(), {"benign": str(benign), "malignant": str(network)}, sefa,
                            _moves(tmp_path / "moves.yaml", -4.0 * side), out, device="cpu")
    manifest = pd.read_csv(out / "manifest.csv")
    assert manifest.groupby("label").size().to_dict() == {"benign": 5, "malignant": 5}
    from dermsynth.data.dataset import read_images
    stored = frame_scores(read_images(out / "lmdb", manifest["key"].tolist()).numpy())
    assert (stored < FRAME_THRESHOLD).all()
    np.testing.assert_allclose(stored, manifest["frame_score_after"], atol=1e-6)
    malignant = manifest[manifest["label"] == "malignant"]
    assert malignant["had_frame"].all() and malignant["moved"].all()
    assert (malignant["frame_score_before"] >= FRAME_THRESHOLD).all() and (malignant["lpips_outside"] >= 0).all()
    benign_rows = manifest[manifest["label"] == "benign"]  # another generator: kept unmoved, frameless as made
    assert not benign_rows["moved"].any() and (benign_rows["lpips_outside"] == 0).all()
    assert summary["per_class"]["malignant"]["framed_kept"] == 5 and manifest["key"].is_unique


def test_frameless_set_refuses_a_shortfall_and_a_wrong_moves_file(framed, tmp_path):
    G, d, network, sefa, factors = framed
    side = float(np.sign(factors["directions"][0] @ d.numpy()))
    networks = {"benign": str(network), "malignant": str(network)}
    with pytest.raises(DermsynthError, match="framed_only"):  # along +d the frame stays
        frameless_set(_set_options(generators={"malignant": "mal_gan"}), networks, sefa,
                      _moves(tmp_path / "wrong.yaml", 4.0 * side), tmp_path / "x", device="cpu")
    with pytest.raises(ConfigError, match="is not explain.frames.gan"):
        frameless_set(_set_options(), networks, sefa, _moves(tmp_path / "other.yaml", -4.0, gan="cgan"),
                      tmp_path / "y", device="cpu")


@pytest.mark.parametrize("text, message", [("gan: mal_gan\nlayer_range: all\n", "lacks 'moves'"),
                                           ("gan: mal_gan\nlayer_range: wide\nmoves: [{direction: 0, magnitude: 1}]",
                                            "layer_range 'wide'"),
                                           ("gan: mal_gan\nlayer_range: all\nmoves: [{direction: -1, magnitude: 1}]",
                                            r"moves\[0\] needs direction"),
                                           ("gan: mal_gan\nlayer_range: all\nmoves: []", "non-empty list")])
def test_a_frame_moves_file_is_checked(tmp_path, text, message):
    path = tmp_path / "moves.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_frame_moves(path)


def test_frame_accuracy_splits_the_test_images_by_their_frame(tmp_path):
    from dermsynth.data.lmdb_store import ImageSetWriter, encode_pixels
    images = np.full((6, 16, 16, 3), 150, np.uint8)
    images[:2][:, corner_ring(16, 16)] = 0  # two framed test images
    keys = [f"k{i}" for i in range(6)]
    writer = ImageSetWriter(tmp_path / "data")
    writer.add_many([(key, encode_pixels(image, "png")) for key, image in zip(keys, images)])
    manifest = pd.DataFrame({"key": keys, "label": ["malignant", "malignant", "benign", "benign", "malignant",
                                                    "benign"], "split": "test"})
    writer.finish(manifest, "binary", 16)
    model = tmp_path / "model"
    model.mkdir()
    (model / "metrics.json").write_text(json.dumps({"scenario": "baseline", "architecture": "resnet10t",
                                                    "classes": ["benign", "malignant"]}))
    predicted = ["malignant", "malignant", "benign", "malignant", "benign", "benign"]  # right on both framed ones
    manifest.assign(predicted=predicted).drop(columns="split").to_csv(model / "predictions-test.csv", index=False)
    table = frame_accuracy_table([model], tmp_path / "data" / "lmdb", tmp_path / "data" / "manifest.csv",
                                 FRAME_THRESHOLD, batch=256)
    row = table.iloc[0]
    assert row["images with frame"] == 2 and row["images without frame"] == 4
    assert row["accuracy with frame"] == 1.0 and row["accuracy without frame"] == 0.5
    assert row["accuracy difference"] == 0.5
    assert row["balanced accuracy without frame"] == pytest.approx(1 / 3, abs=1e-4)  # benign 2/3, malignant 0/1


@pytest.mark.parametrize("key, value, message", [("gan", "nope", "'explain.frames.gan': 'nope' is not defined"),
                                                 ("family", "nope", "'explain.frames.family': 'nope' is not a family")])
def test_the_workflow_config_names_a_wrong_frames_reference(key, value, message):
    from dermsynth.config import validate_config

    from .conftest import REPO
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw["explain"]["frames"][key] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(raw, workflow=True)


def test_the_verbs_run_from_the_workflows_options_files_and_read_every_option(framed, tmp_path):
    """`dermsynth explain frame-directions` and `frameless-set` with options files as the workflow writes them (the demo
    config's, made smaller): their outputs (what a verb reads is audited statically: tests/test_settings.py)."""
    import os
    from dataclasses import replace
    import subprocess
    import sys

    from dermsynth.config import load_config

    from .conftest import REPO
    G, d, network, sefa, factors = framed
    config = load_config(REPO / "config" / "config.yaml", workflow=True)
    directions = replace(FrameDirectionsOptions.from_config(config, gan="mal_gan"), latents=4, directions=3,
                         magnitudes=[3.0]).write(tmp_path / "options")
    frameless = replace(FramelessSetOptions.from_config(config), images=6).write(tmp_path / "options")
    benign = _save(frame_generator(frame_bias=-2.0)[0], tmp_path / "ben_gan" / "network-final.pt",
                   trained_on=("benign",))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "frames"
    commands = [["explain", "frame-directions", "--options", directions, "--network", str(network), "--sefa", str(sefa),
                 "--out", str(out / "directions.csv"), "--figure", str(out / "directions.png"),
                 "--proposal", str(out / "proposal.yaml")],
                ["explain", "frameless-set", "--options", frameless, "--network", f"benign={benign}",
                 "--network", f"malignant={network}", "--sefa", str(sefa), "--moves", str(out / "proposal.yaml"),
                 "--out", str(tmp_path / "frameless")]]
    for command in commands:
        done = subprocess.run([sys.executable, "-m", "dermsynth.cli", *command, "--device", "cpu"], capture_output=True,
                              text=True, env=env, cwd=REPO)
        assert done.returncode == 0, done.stderr[-2000:]
    proposal = load_frame_moves(out / "proposal.yaml", "mal_gan", "all")
    assert proposal["moves"][0]["direction"] == 0 and len(proposal["moves"]) == config["explain"]["frames"]["choose"]
    manifest = pd.read_csv(tmp_path / "frameless" / "manifest.csv")
    assert manifest.groupby("label").size().to_dict() == {"benign": 6, "malignant": 6}
    assert (manifest["frame_score_after"] < FRAME_THRESHOLD).all()


@pytest.mark.workflow
def test_a_reviewed_frame_moves_file_replaces_the_proposal(tmp_path):
    """explain.frames.file: the frameless set reads the reviewer's file, not frame_directions' proposal (a dry run)."""
    import shutil
    import subprocess
    import sys

    from .conftest import REPO
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config" / "transformations.yaml", tmp_path / "config" / "transformations.yaml")
    _moves(tmp_path / "config" / "frame_moves.yaml", -3.0)

    def planned(frames_file):
        raw["explain"]["frames"]["file"] = frames_file
        (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(raw))
        result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
                                 "-n", "-p", "results/synthetic/frameless"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        return [line for line in (result.stdout + result.stderr).splitlines() if "dermsynth explain frameless-set" in line]
    [proposal] = planned(None)
    assert "--moves results/explain/frames/mal_gan/proposal.yaml" in proposal
    [reviewed] = planned("config/frame_moves.yaml")
    assert "--moves config/frame_moves.yaml" in reviewed
    assert "--network benign=results/gan/ben_gan/network-final.pt --network malignant=results/gan/mal_gan" in reviewed


def test_sefa_and_moves_of_another_generator_are_refused_by_identity(framed, tmp_path):
    """Issue 27, kind 1: a SeFa file or a frame-moves proposal made for another generator of the same architecture
    (same shapes, other weights) is refused in one line, by the weights' identity, before any work; so is a SeFa
    file that records no generator, and a file that is not a SeFa file at all."""
    from dermsynth.checkpoints import WrongFileError
    from dermsynth.fingerprint import StateMismatchError
    G, d, network, sefa, factors = framed
    other = _save(frame_generator(frame_bias=-2.0)[0], tmp_path / "other_gan" / "network-final.pt")
    with pytest.raises(StateMismatchError, match=r"sefa-all.npz was made for another generator .* of .*other_gan"):
        run_frame_directions(_directions_options(), other, sefa, tmp_path / "d.csv", tmp_path / "d.png",
                             tmp_path / "p.yaml", device="cpu")
    assert not (tmp_path / "d.csv").exists()
    unmarked = dict(np.load(sefa))
    unmarked.pop("generator")
    np.savez(tmp_path / "old.npz", **unmarked)
    with pytest.raises(StateMismatchError, match="records no generator"):
        run_frame_directions(_directions_options(), network, tmp_path / "old.npz", tmp_path / "d.csv",
                             tmp_path / "d.png", tmp_path / "p.yaml", device="cpu")
    np.savez(tmp_path / "not-sefa.npz", keys=np.array(["a"]))
    with pytest.raises(WrongFileError, match="not-sefa.npz is not SeFa directions"):
        run_frame_directions(_directions_options(), network, tmp_path / "not-sefa.npz", tmp_path / "d.csv",
                             tmp_path / "d.png", tmp_path / "p.yaml", device="cpu")
    moves = _moves(tmp_path / "moves.yaml", -4.0)
    text = moves.read_text().replace("moves:", "generator: 0123456789abcdef\nmoves:", 1)
    moves.write_text(text)
    with pytest.raises(StateMismatchError, match=r"moves.yaml was made for another generator \(0123456789abcdef"):
        frameless_set(_set_options(), {"benign": str(network), "malignant": str(network)}, sefa, moves,
                      tmp_path / "set", device="cpu")
    assert not (tmp_path / "set").exists()
