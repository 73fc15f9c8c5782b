"""Issue 27 in the classify stage: a classifier's state belongs to its run, one writer per model folder, a
kill at any moment leaves complete outputs or none, wrong files and folders are one line, randomness is local.

Case 04 (../shared/cases/turn3/04-classifier-resume-ignores-new-lr): a classifier killed after an epoch,
its recipe then edited (lr, batch), was resumed with the old optimizer (old lr) while metrics.json recorded
the new recipe."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from dermsynth.checkpoints import WrongFileError
from dermsynth.classify.data import ImageRows, assemble_training_set
from dermsynth.classify.train import Recipe, load_best, train_classifier
from dermsynth.config import schema_defaults
from dermsynth.labels import scheme_classes

from .race import DERMSYNTH, assert_no_partial_outputs, assert_one_refused, killed_at, start_together

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*:UserWarning")
CLASSES = list(scheme_classes("ham7"))


@pytest.fixture(scope="module")
def sets(gan_setup):
    _, lmdb, manifest = gan_setup
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    stores = {"real": lmdb}
    train = ImageRows(assemble_training_set(frame), stores, CLASSES, 16, ["hflip"])
    validation = ImageRows(frame[frame["split"] == "validation"].assign(store="real"), stores, CLASSES, 16)
    return train, validation


def recipe(**overrides) -> Recipe:
    return Recipe.from_section({**schema_defaults("classifiers.ham10000.recipe"), **dict(
        input_resolution=16, batch=16, epochs=3, patience=3, lr=1e-3, pretrained=False, monitor="accuracy",
        augment=["hflip"]), **overrides})


def _lrs(path: Path) -> list[float]:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    return sorted({group["lr"] for group in saved["optimizer"]["param_groups"]})


def _aside(folder: Path) -> list[Path]:
    return sorted(folder.glob("superseded-*"))


def test_an_edited_recipe_restarts_with_its_own_lr_and_sets_the_old_state_aside(sets, tmp_path, capsys):
    """Case 04: killed after epoch 1, lr 1e-3 → 1e-6 and batch 16 → 8: the old resume.pt and best.pt are moved to
    superseded-<time>/ (one line naming what differs) and training starts at epoch 0 with the new lr."""
    train, validation = sets
    train_classifier("resnet10t", CLASSES, train, validation, recipe(), tmp_path, stop_after_epochs=1)  # "killed"
    old_best = (tmp_path / "best.pt").read_bytes()
    capsys.readouterr()
    result = train_classifier("resnet10t", CLASSES, train, validation, recipe(lr=1e-6, batch=8), tmp_path,
                              stop_after_epochs=1)
    said = capsys.readouterr()
    assert _lrs(tmp_path / "resume.pt") == [1e-6]
    assert [h["epoch"] for h in result["history"]] == [0] and "resuming" not in said.out
    [aside] = _aside(tmp_path)
    assert (aside / "best.pt").read_bytes() == old_best and _lrs(aside / "resume.pt") == [1e-3]
    line = [x for x in said.err.splitlines() if "superseded-" in x]
    assert len(line) == 1 and "recipe.lr: 0.001 → 1e-06" in line[0] and "resume.pt was written by another run" in line[0]
    assert torch.load(tmp_path / "best.pt", weights_only=True)["fingerprint"]["recipe"]["lr"] == 1e-6


def test_a_longer_schedule_resumes_and_each_start_is_recorded(sets, tmp_path, capsys):
    """epochs and patience are schedule-only: raising them after a kill resumes (each epoch once)."""
    train, validation = sets
    train_classifier("resnet10t", CLASSES, train, validation, recipe(epochs=2), tmp_path, stop_after_epochs=1)
    result = train_classifier("resnet10t", CLASSES, train, validation, recipe(epochs=3, patience=5), tmp_path)
    assert "resuming resnet10t after epoch 1" in capsys.readouterr().out and not _aside(tmp_path)
    assert [h["epoch"] for h in result["history"]] == [0, 1, 2]
    assert [(r["from_epoch"], r["epochs"], r["patience"]) for r in result["runs"]] == [(0, 2, 3), (1, 3, 5)]


def test_other_data_is_another_run(sets, gan_setup, tmp_path, capsys):
    """Another validation selection (same classes, same store) is another run: set aside, started afresh."""
    train, validation = sets
    train_classifier("resnet10t", CLASSES, train, validation, recipe(), tmp_path, stop_after_epochs=1)
    fewer = ImageRows(validation.rows.iloc[1:], {"real": gan_setup[1]}, CLASSES, 16)
    result = train_classifier("resnet10t", CLASSES, train, fewer, recipe(), tmp_path, stop_after_epochs=1)
    assert [h["epoch"] for h in result["history"]] == [0] and len(_aside(tmp_path)) == 1
    assert "data.validation:" in capsys.readouterr().err


def test_a_best_pt_of_another_recipe_is_never_picked(sets, tmp_path, capsys):
    """A finished folder (best.pt, no resume.pt) retrained with another recipe: the old best.pt is set aside, so
    no epoch of the new run has to beat a score of the old one and load_best gives the new run's model."""
    train, validation = sets
    train_classifier("resnet10t", CLASSES, train, validation, recipe(epochs=1), tmp_path)
    (tmp_path / "resume.pt").unlink()  # as run_classifier leaves a finished folder
    result = train_classifier("resnet10t", CLASSES, train, validation, recipe(epochs=1, lr=1e-4), tmp_path)
    assert "best.pt was written by another run" in capsys.readouterr().err
    _, best = load_best(tmp_path)
    assert best["fingerprint"] == result["fingerprint"] and json.loads(best["recipe"])["lr"] == 1e-4


def test_a_truncated_resume_pt_is_set_aside(sets, tmp_path, capsys):
    train, validation = sets
    train_classifier("resnet10t", CLASSES, train, validation, recipe(), tmp_path, stop_after_epochs=1)
    data = (tmp_path / "resume.pt").read_bytes()
    (tmp_path / "resume.pt").write_bytes(data[:len(data) // 2])  # an interrupted copy
    result = train_classifier("resnet10t", CLASSES, train, validation, recipe(), tmp_path, stop_after_epochs=1)
    assert [h["epoch"] for h in result["history"]] == [0]
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err and len(_aside(tmp_path)) == 1


def test_wrong_files_given_as_a_classifier_are_one_line(sets, tmp_path, gan_setup):
    """load_best (every verb's --classifier/--models reader): a folder without best.pt, a resume.pt, a
    truncated best.pt, a generator-like checkpoint: WrongFileError naming the file, never a KeyError."""
    train, validation = sets
    train_classifier("resnet10t", CLASSES, train, validation, recipe(epochs=1), tmp_path / "m")
    with pytest.raises(WrongFileError, match=r"holds no best.pt: it is not a trained classifier folder"):
        load_best(tmp_path)
    with pytest.raises(WrongFileError, match=r"resume.pt is a classifier's resume checkpoint .*not a classifier"):
        load_best(tmp_path / "m" / "resume.pt")
    data = (tmp_path / "m" / "best.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[:1000])
    with pytest.raises(WrongFileError, match=r"cut.pt is not a readable PyTorch checkpoint"):
        load_best(tmp_path / "cut.pt")
    torch.save({"format": "dermsynth-stylegan2-checkpoint-v1", "G_ema": {}, "options": "{}"}, tmp_path / "g.pt")
    with pytest.raises(WrongFileError, match=r"g.pt is a dermsynth generator checkpoint, not a classifier"):
        load_best(tmp_path / "g.pt")
    model, _ = load_best(tmp_path / "m" / "best.pt")  # the file itself is accepted too
    assert not model.training


def test_training_leaves_the_callers_random_state_alone(sets, tmp_path):
    train, validation = sets
    torch.manual_seed(42)
    expected = torch.rand(4)
    torch.manual_seed(42)
    train_classifier("resnet10t", CLASSES, train, validation, recipe(epochs=1), tmp_path)
    assert torch.equal(torch.rand(4), expected)


def test_extractors_leave_the_callers_random_state_alone(tmp_path):
    """Kind 7: the random-init trunks are seeded privately (the same weights every time)."""
    from dermsynth.metrics import extractors
    torch.manual_seed(7)
    expected = torch.rand(4)
    torch.manual_seed(7)
    first, _ = extractors.lpips_model(tmp_path, "alex")
    vgg = extractors.vgg16(tmp_path)
    assert torch.equal(torch.rand(4), expected)
    again, _ = extractors.lpips_model(tmp_path, "alex")
    for (name, a), b in zip(first.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    assert vgg.weights.startswith("random-init")


# --- the train-classifier verb: writability, two writers, kills ----------------------------------------------

def _verb(gan_setup, folder: Path, epochs: int = 3) -> list[str]:
    cfg, lmdb, manifest = gan_setup
    raw = json.loads(json.dumps(cfg))
    raw["classifiers"]["ham10000"]["recipe"].update(epochs=epochs, patience=epochs, batch=16)
    (folder / "config.yaml").write_text(yaml.safe_dump(raw))
    return [*DERMSYNTH, "classify", "train", "--config", str(folder / "config.yaml"), "--study", "ham10000",
            "--scenario", "baseline", "--architecture", "resnet10t", "--lmdb", str(lmdb), "--manifest", str(manifest),
            "--device", "cpu", "--threads", "1"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_a_read_only_output_folder_is_one_line_before_training(gan_setup, tmp_path):
    import subprocess
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        done = subprocess.run([*_verb(gan_setup, tmp_path), "--out", str(locked / "model")], capture_output=True,
                              text=True, timeout=300)
    finally:
        locked.chmod(0o700)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().count("\n") == 0 and str(locked / "model") in done.stderr
    assert "epoch" not in done.stdout


def test_an_output_folder_that_cannot_be_made_is_one_line_before_training(gan_setup, tmp_path):
    """(Works as root too.) --out under a file: the folder cannot be created; one line, before any epoch."""
    import subprocess
    (tmp_path / "a-file").write_text("x")
    done = subprocess.run([*_verb(gan_setup, tmp_path), "--out", str(tmp_path / "a-file" / "model")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "a-file/model" in done.stderr and "epoch" not in done.stdout


def test_two_train_classifier_on_one_folder_one_is_refused(gan_setup, tmp_path):
    command = [*_verb(gan_setup, tmp_path, epochs=2), "--out", str(tmp_path / "model")]
    both = start_together([command, command], tmp_path)
    done = assert_one_refused(both)
    refused = [r for r in both if r is not done][0]
    assert "another train-classifier (pid" in refused.stderr and str(tmp_path / "model") in refused.stderr
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [0, 1] and done.returncode == 0
    assert_no_partial_outputs(tmp_path / "model")


@pytest.mark.workflow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_killed_at_a_random_moment_then_rerun(gan_setup, tmp_path, seed):
    """SIGKILL at a seeded random moment (model building, an epoch, a checkpoint write, predictions): every file
    under a final name is complete, and the rerun finishes with each epoch once in its history."""
    command = [*_verb(gan_setup, tmp_path, epochs=3), "--out", str(tmp_path / "model")]
    killed_at(command, seed, tmp_path, low=2.0, high=25.0)
    assert_no_partial_outputs(tmp_path / "model")
    rerun = start_together([command], tmp_path)[0]
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_no_partial_outputs(tmp_path / "model")
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [0, 1, 2]
    assert metrics["recipe"]["epochs"] == 3 and not (tmp_path / "model" / "resume.pt").exists()
