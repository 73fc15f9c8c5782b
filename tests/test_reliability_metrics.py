"""Issue 27 in the metrics stage: an image folder is read whole (sub-folders, linked folders, loops guarded) and
what is left out is said; feature caches are reused only for the same images, extractor weights and
preprocessing; KID leaves numpy's global random state alone; an output being written is not written twice."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermsynth.config import schema_defaults
from dermsynth.errors import InputError
from dermsynth.locks import BusyError, exclusive
from dermsynth.metrics.gan_eval import left_out_line, read_image_set


def _png(path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)


@pytest.fixture()
def image_tree(tmp_path):
    """A `generate --format png` folder (PNGs + manifest.csv + generate.json), with a sub-folder of images, a
    symbolic link to a folder of images elsewhere, a link back to the folder itself (a loop), a second link to the
    linked folder, a lock file and a killed writer's temporary file."""
    root = tmp_path / "fakes"
    keys = [f"tiny-seed{i:07d}" for i in range(3)]
    for i, key in enumerate(keys):
        _png(root / f"{key}.png", i)
    pd.DataFrame({"key": keys, "label": "nv", "split": "train"}).to_csv(root / "manifest.csv", index=False)
    (root / "generate.json").write_text("{}")
    _png(root / "more" / "m0.png", 10)
    _png(root / "more" / "deeper" / "m1.png", 11)
    _png(tmp_path / "shared" / "s0.png", 20)
    _png(tmp_path / "shared" / "s1.png", 21)
    (root / "linked").symlink_to(tmp_path / "shared")
    (root / "linked-again").symlink_to(tmp_path / "shared")
    (root / "more" / "loop").symlink_to(root)
    (root / ".dermsynth-lock").write_text("{}")
    (root / ".tiny-seed0000009.png.123.abcd.tmp").write_bytes(b"half")
    return root


def test_a_folder_is_read_whole_and_what_is_left_out_is_said(image_tree):
    images, names, left = read_image_set(image_tree)
    assert names == ["linked/s0.png", "linked/s1.png", "more/deeper/m1.png", "more/m0.png",
                     "tiny-seed0000000.png", "tiny-seed0000001.png", "tiny-seed0000002.png"]
    assert images.shape == (7, 3, 8, 8)
    assert [int(image[0, 0, 0]) for image in images] == [20, 21, 11, 10, 0, 1, 2]
    reasons = {item["file"]: item["reason"] for item in left}
    assert set(reasons) == {"manifest.csv", "generate.json", "more/loop", "linked-again", ".dermsynth-lock",
                            ".tiny-seed0000009.png.123.abcd.tmp"}
    assert "already read" in reasons["more/loop"] and "already read" in reasons["linked-again"]
    assert "own record" in reasons["manifest.csv"] and "hidden" in reasons[".dermsynth-lock"]
    line = left_out_line(image_tree, left)
    assert "\n" not in line and "left out 6 entries" in line and "more/loop" in line


def test_the_limit_and_a_manifest_of_missing_images_are_said(image_tree):
    images, names, left = read_image_set(image_tree, limit=2)
    assert names == ["linked/s0.png", "linked/s1.png"] and len(images) == 2
    beyond = [item["file"] for item in left if "beyond the limit" in item["reason"]]
    assert len(beyond) == 5 and len(beyond) + len(names) == 7  # every image counted once
    (image_tree / "tiny-seed0000001.png").unlink()
    with pytest.raises(InputError, match=r"manifest.csv lists 1 image\(s\) that are not in its folder "
                                         r"\(tiny-seed0000001.png\)"):
        read_image_set(image_tree)


def test_a_link_to_nothing_is_left_out_and_an_undecodable_file_is_an_error(tmp_path):
    _png(tmp_path / "set" / "a.png", 1)
    os.symlink(tmp_path / "gone", tmp_path / "set" / "b.png")
    _, names, left = read_image_set(tmp_path / "set")
    assert names == ["a.png"] and left[0]["file"] == "b.png" and "link to nothing" in left[0]["reason"]
    (tmp_path / "set" / "notes.txt").write_text("seeds 0-4")
    with pytest.raises(InputError, match="1 cannot be decoded: notes.txt"):
        read_image_set(tmp_path / "set")


def test_evaluate_images_refuses_while_another_process_writes_its_output(image_tree, tmp_path):
    from dermsynth.metrics.gan_eval import evaluate_images
    out = tmp_path / "m.json"
    with exclusive(out, "evaluate-images"):
        with pytest.raises(BusyError, match="another evaluate-images .* is writing to"):
            evaluate_images(image_tree, tmp_path / "lmdb", tmp_path / "manifest.csv", ["train"], None, out,
                            schema_defaults("evaluation"))
    assert not out.exists()


# ---- feature caches ----------------------------------------------------------------------------------------
class _Net:
    name, preprocessing, real_weights = "inception", {"resize": 299}, True

    def __init__(self, weights: str):
        self.weights = weights


def test_a_feature_cache_belongs_to_its_images_weights_bytes_and_preprocessing(tmp_path):
    from dermsynth.metrics.evaluate import feature_key, read_features, write_features
    weights = tmp_path / "inception.pt"
    weights.write_bytes(b"weights v1")
    identity = {"dataset": "ham10000", "split": "train", "store": "s1", "keys": "k", "count": 2}
    key = feature_key(identity, _Net(str(weights)))
    path = write_features(tmp_path / "cache" / "f.npz", np.ones((2, 3)), key)
    np.testing.assert_array_equal(read_features(path, key), np.ones((2, 3)))
    weights.write_bytes(b"weights v2, same path")  # fetched again: other weights under the same name
    os.utime(weights, ns=(1, 1))
    assert feature_key(identity, _Net(str(weights))) != key
    assert read_features(path, feature_key(identity, _Net(str(weights)))) is None
    assert read_features(path, feature_key({**identity, "store": "s2"}, _Net(str(weights)))) is None
    path.write_bytes(path.read_bytes()[:100])  # truncated: not an error, recomputed by the caller
    assert read_features(path, key) is None
    assert not list((tmp_path / "cache").glob("*.tmp*"))


def test_the_reference_identity_changes_with_the_store(tmp_path):
    from dermsynth.metrics.gan_eval import reference_identity
    lmdb = tmp_path / "lmdb"
    lmdb.mkdir()
    (lmdb / "index.json").write_text('{"resolution": 64, "keys": ["a"]}')
    frame = pd.DataFrame({"key": ["a"]})
    first = reference_identity("d", ["train"], None, lmdb, frame)
    (lmdb / "index.json").write_text('{"resolution": 64, "keys": ["a"], "rebuilt": true}')
    assert reference_identity("d", ["train"], None, lmdb, frame) != first


# ---- randomness stays local ----------------------------------------------------------------------------------
def test_kid_is_clean_fids_value_without_touching_numpys_global_state():
    from cleanfid import fid as clean_fid

    from dermsynth.metrics.generative import kid
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(30, 8)), rng.normal(0.5, 1, size=(25, 8))
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    value = kid(real, fake, subsets=5, subset_size=10, seed=3)
    assert np.array_equal(np.random.get_state()[1], before)
    np.random.seed(3)
    assert value == pytest.approx(clean_fid.kernel_distance(real, fake, num_subsets=5, max_subset_size=10), abs=0)
    assert kid(real, fake, subsets=5, subset_size=10, seed=4) != value  # another seed, other subsets
