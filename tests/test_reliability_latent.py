"""Issue 27 in the latent stage: components belong to their generator (and data), one writer per output, a
killed run leaves no half file and its rerun completes, wrong files get one line, builders leave the global
random state alone."""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dermsynth.checkpoints import WrongFileError
from dermsynth.config import schema_defaults, validate_config
from dermsynth.gan.networks import Generator
from dermsynth.latent.identity import ForeignComponentError, generator_digest
from dermsynth.latent.inversion import E4eOptions, StaleCheckpointError, build_e4e, build_hypernetwork, \
    HyperStyleOptions, train_e4e
from dermsynth.latent.options import TrainE4eOptions
from dermsynth.latent.run_inversion import StoredInversion, _merge_chunks, load_e4e, load_hyperstyle, run_train_e4e
from dermsynth.latent.transform import sefa_direction
from tests import race

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*:UserWarning")

NETWORK = {"z_dim": 16, "w_dim": 16, "channel_base": 256, "channel_max": 16, "mapping_layers": 2}


def _e4e(**settings) -> E4eOptions:
    """The schema's `latent.e4e` defaults changed by `settings`."""
    return E4eOptions.from_section({**schema_defaults("latent.e4e"), **settings})


def _hyperstyle(**settings) -> HyperStyleOptions:
    """The schema's `latent.hyperstyle` defaults changed by `settings`."""
    return HyperStyleOptions.from_section({**schema_defaults("latent.hyperstyle"), **settings})


def _generator(seed: int, resolution: int) -> Generator:
    generator_rng = torch.Generator().manual_seed(seed)
    G = Generator(img_resolution=resolution, **NETWORK).eval()
    with torch.no_grad():
        for parameter in G.parameters():  # weights from `seed`, without touching the global random state
            parameter.copy_(torch.randn(parameter.shape, generator=generator_rng) * 0.2)
    return G.requires_grad_(False)


def _save_generator(G: Generator, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"options": json.dumps({"network": NETWORK}), "G_ema": G.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def two_generators(gan_setup, tmp_path_factory):
    """Two generators of one architecture (same tensor shapes) with other weights, at the demo's resolution,
    and e4e options small enough for seconds of CPU."""
    cfg, lmdb, manifest = gan_setup
    resolution = json.loads((lmdb / "index.json").read_text())["resolution"]
    root = tmp_path_factory.mktemp("generators")
    paths = [_save_generator(_generator(seed, resolution), root / name / "network-final.pt")
             for seed, name in ((1, "a"), (2, "b"))]
    raw = copy.deepcopy(cfg)
    raw["latent"]["e4e"].update(backbone="resnet18", input_resolution=32, steps=24, batch=2, checkpoint_steps=2,
                                progressive_start=1, progressive_every=1, pretrained=False)
    raw["latent"]["inversion"].update(report_images=2)
    cfg = validate_config(raw)
    options = TrainE4eOptions.from_config(cfg, gan="tiny")
    return options, paths, lmdb, manifest


def _e4e_file(G, path: Path, generator: str | None) -> Path:
    options = _e4e(backbone="resnet18", input_resolution=32, pretrained=False)
    payload = {"format": "e4e", "encoder": build_e4e(G, options).state_dict(), "options": asdict(options)}
    if generator is not None:
        payload["fingerprint"] = {"generator": generator}
    torch.save(payload, path)
    return path


def test_an_e4e_of_one_generator_is_refused_for_another_of_the_same_shapes(tmp_path):
    a, b = _generator(1, 16), _generator(2, 16)
    path = _e4e_file(a, tmp_path / "e4e.pt", generator_digest(a))
    encoder, _ = load_e4e(path, a)  # its own generator: loaded
    assert encoder.num_ws == a.num_ws
    with pytest.raises(ForeignComponentError) as caught:
        load_e4e(path, b)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and "another generator" in message
    assert generator_digest(a) in message and generator_digest(b) in message and "train-e4e" in message
    with pytest.raises(ForeignComponentError, match="records no generator"):  # cannot be shown to belong
        load_e4e(_e4e_file(a, tmp_path / "old.pt", None), a)


def test_a_hyperstyle_must_belong_to_its_e4e(tmp_path):
    G = _generator(1, 16)
    options = _hyperstyle(backbone="resnet18", input_resolution=32, iterations=1, layer_ranges=["all"],
                          pretrained=False)
    mine = build_e4e(G, _e4e(backbone="resnet18", input_resolution=32, pretrained=False, seed=1))
    other = build_e4e(G, _e4e(backbone="resnet18", input_resolution=32, pretrained=False, seed=2))
    from dermsynth.fingerprint import tensors_digest
    torch.save({"format": "hyperstyle", "hypernetwork": build_hypernetwork(G, options).state_dict(),
                "options": asdict(options),
                "fingerprint": {"generator": generator_digest(G), "e4e": tensors_digest(mine.state_dict())}},
               tmp_path / "hyperstyle.pt")
    load_hyperstyle(tmp_path / "hyperstyle.pt", G, encoder=mine)
    with pytest.raises(ForeignComponentError, match="another e4e encoder"):
        load_hyperstyle(tmp_path / "hyperstyle.pt", G, encoder=other)


@pytest.mark.parametrize("kind", ["folder", "truncated", "classifier", "hyperstyle-as-e4e", "resume"])
def test_a_wrong_file_given_as_e4e_is_one_line(kind, tmp_path):
    G = _generator(1, 16)
    good = _e4e_file(G, tmp_path / "good.pt", generator_digest(G))
    path = tmp_path / "wrong.pt"
    if kind == "folder":
        path = tmp_path
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[:1000])
    elif kind == "classifier":
        torch.save({"architecture": "resnet10t", "model": {"w": torch.zeros(2)}}, path)
    elif kind == "resume":  # e4e.resume.pt: an unfinished training's state, with the right generator
        torch.save({**torch.load(good, weights_only=True), "step": 3}, path)
    else:
        torch.save({"format": "hyperstyle", "hypernetwork": {}, "options": {}}, path)
    with pytest.raises(WrongFileError) as caught:
        load_e4e(path, G)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_sefa_directions_of_another_generator_or_a_wrong_file_are_refused(tmp_path):
    a, b = _generator(1, 16), _generator(2, 16)
    spec = {"name": "SV", "direction": 0}
    path = tmp_path / "sefa-all.npz"
    np.savez(path, directions=np.eye(16), eigenvalues=np.ones(16), ws_indices=np.arange(3),
             generator=np.array(generator_digest(a)))
    direction, indices = sefa_direction(spec, path, generator_digest(a), "a.pt")
    assert direction.shape == (16,) and indices == [0, 1, 2]
    with pytest.raises(ForeignComponentError, match="another generator"):
        sefa_direction(spec, path, generator_digest(b), "b.pt")
    (tmp_path / "cut.npz").write_bytes(path.read_bytes()[:300])
    for wrong in (tmp_path / "cut.npz", tmp_path):
        with pytest.raises(WrongFileError) as caught:
            sefa_direction(spec, wrong, generator_digest(a), "a.pt")
        assert "\n" not in str(caught.value)


def test_an_inversion_of_another_generator_or_an_incomplete_one_is_refused(tmp_path):
    a, b = _generator(1, 16), _generator(2, 16)
    frame = pd.DataFrame({"key": ["k0", "k1"], "label": "nv", "split": "train"})
    chunk = tmp_path / "chunk.pt"
    torch.save({"keys": ["k0", "k1"], "ws": torch.zeros(2, a.num_ws, 16), "factors": {}}, chunk)
    _merge_chunks([chunk], tmp_path / "inv", frame, [], record={"fingerprint": {"generator": generator_digest(a)}})
    StoredInversion(tmp_path / "inv").require_generator(a, "a.pt")
    with pytest.raises(ForeignComponentError, match="another generator"):
        StoredInversion(tmp_path / "inv").require_generator(b, "b.pt")
    (tmp_path / "inv" / "inversion.json").unlink()  # what a kill while merging leaves
    from dermsynth.errors import InputError
    with pytest.raises(InputError, match="not a complete inversion"):
        StoredInversion(tmp_path / "inv")


def test_an_e4e_resume_checkpoint_of_another_generator_is_not_resumed(tmp_path):
    """The resume checkpoint records generator and data; the same options with another fingerprint are refused
    by the trainer (and set aside by the verb, next test)."""
    from dermsynth.metrics.extractors import lpips_model
    G = _generator(1, 32)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    lpips, _ = lpips_model(net="alex")
    options = _e4e(backbone="resnet18", input_resolution=32, steps=3, batch=2, checkpoint_steps=2,
                   pretrained=False)
    train_e4e(G, images, options, lpips, tmp_path / "ckpt.pt", fingerprint={"generator": "aaa"})  # leaves step 2
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["fingerprint"] == {"generator": "aaa"}
    with pytest.raises(StaleCheckpointError, match=r"by another run \(generator: aaa → bbb\)"):
        train_e4e(G, images, options, lpips, tmp_path / "ckpt.pt", fingerprint={"generator": "bbb"})


def test_train_e4e_sets_aside_a_resume_checkpoint_of_another_generator(two_generators, tmp_path, capsys):
    options, (a, b), lmdb, manifest = two_generators
    out = tmp_path / "e4e.pt"
    checkpoint = tmp_path / "e4e.resume.pt"
    torch.save({"step": 2, "options": {}, "fingerprint": {"generator": "from-a"}}, checkpoint)
    from dermsynth.latent.inversion import resume_options
    state = torch.load(checkpoint, weights_only=True)
    state["options"] = json.loads(json.dumps(resume_options(E4eOptions.from_section(options.e4e))))
    torch.save(state, checkpoint)
    run_train_e4e(options, b, lmdb, manifest, out, device="cpu")
    err = capsys.readouterr().err
    aside = [line for line in err.splitlines() if "superseded-" in line]
    assert len(aside) == 1 and "generator: from-a →" in aside[0]
    assert list(tmp_path.glob("superseded-*/e4e.resume.pt")) and not checkpoint.exists()
    saved = torch.load(out, weights_only=True)
    G_b = load_generator_for_test(b)
    assert saved["fingerprint"]["generator"] == generator_digest(G_b)
    assert saved["fingerprint"]["data.resolution"] == G_b.img_resolution
    assert json.loads(out.with_suffix(".json").read_text())["history"][0]["step"] == 0  # started afresh


def load_generator_for_test(path):
    from dermsynth.gan.run import load_generator
    return load_generator(path)


def test_builders_leave_the_global_random_state_alone_and_seeds_differ():
    G = _generator(1, 16)
    before = torch.random.get_rng_state()
    first = build_e4e(G, _e4e(backbone="resnet18", input_resolution=32, pretrained=False, seed=1))
    assert torch.equal(torch.random.get_rng_state(), before)
    again = build_e4e(G, _e4e(backbone="resnet18", input_resolution=32, pretrained=False, seed=1))
    other = build_e4e(G, _e4e(backbone="resnet18", input_resolution=32, pretrained=False, seed=2))
    name = "heads.0.linear.weight"
    assert torch.equal(first.state_dict()[name], again.state_dict()[name])
    assert not torch.equal(first.state_dict()[name], other.state_dict()[name])
    build_hypernetwork(G, _hyperstyle(backbone="resnet18", input_resolution=32, layer_ranges=["all"],
                                      pretrained=False))
    assert torch.equal(torch.random.get_rng_state(), before)


# ---- real processes: two writers at once, SIGKILL at seeded random moments ------------------------------------
def _command(options_file, network, lmdb, manifest, out) -> list[str]:
    return [*race.DERMSYNTH, "latent", "train-e4e", "--options", str(options_file), "--network", str(network), "--lmdb",
            str(lmdb), "--manifest", str(manifest), "--out", str(out), "--device", "cpu", "--threads", "1"]


@pytest.mark.workflow
def test_two_train_e4e_on_one_output_one_is_refused_and_kills_leave_no_half_file(two_generators, tmp_path):
    options, (a, _), lmdb, manifest = two_generators
    options_file = options.write(tmp_path / "options")
    out = tmp_path / "latent" / "e4e.pt"
    command = _command(options_file, a, lmdb, manifest, out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        done = race.start_together([command, command], cwd=tmp_path)
    race.assert_one_refused(done, "is writing to")
    assert "another train-e4e (pid" in next(r.stderr for r in done if r.returncode)
    race.assert_no_partial_outputs(out.parent)
    first = torch.load(out, weights_only=True)
    out.unlink()
    out.with_suffix(".json").unlink()
    for seed in range(3):  # killed at seeded moments (start-up, training, report); each leaves only complete files
        race.killed_at(command, seed, cwd=tmp_path, low=3.0, high=15.0)
        race.assert_no_partial_outputs(out.parent)
    rerun = race.start_together([command], cwd=tmp_path)[0]
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    race.assert_no_partial_outputs(out.parent)
    report = json.loads(out.with_suffix(".json").read_text())
    steps = [h["step"] for h in report["history"]]
    assert len(steps) == len(set(steps))  # each step logged once
    resumed = torch.load(out, weights_only=True)
    for name, tensor in first["encoder"].items():  # the same encoder as the uninterrupted run
        assert torch.equal(tensor, resumed["encoder"][name]), name
    assert not out.with_name("e4e.resume.pt").exists()
