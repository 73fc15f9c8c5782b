"""Issue 27 for the data and synthetic stages: state that belongs to its run, one writer per output, nothing
skipped silently, one line for a wrong file or a full disk, missing ids, images beyond the decoder's limit.

Each test builds its own tiny `folder` source (a hospital export: `clinic/img/*.jpg` + `labels.csv`) and runs
the real verbs, in this process or as `python -m dermsynth` subprocesses.
"""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from dermsynth.config import validate_config
from dermsynth.data.images import ImageRejected, decode_image
from dermsynth.data.ingest import ingest
from dermsynth.data.lmdb_store import ImageSetWriter, LmdbImageStore
from dermsynth.data.options import IngestOptions, SplitOptions
from dermsynth.data.records import MISSING_SPELLINGS, clean_id
from dermsynth.data.splits import group_ids, write_split
from dermsynth.locks import BusyError, exclusive

from .race import DERMSYNTH, assert_no_partial_outputs, assert_one_refused, killed_at, start_together

LABELS = ["mel", "nv", "bkl"]


def _picture(i: int, size: tuple[int, int] = (80, 60), noise: bool = False) -> Image.Image:
    rng = np.random.default_rng(i)
    w, h = size
    if noise:  # incompressible: the store is as big as its pixels
        return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    yy, xx = np.mgrid[0:h, 0:w]
    d = np.sqrt((xx - w / 2) ** 2 + (yy - h / 2) ** 2)
    a = np.clip((min(w, h) * 0.3 - d) / 4, 0, 1)[..., None]
    skin = np.array([222, 180, 160], float) + rng.normal(0, 6, (h, w, 3))
    spot = np.array([110, 60, 40], float) * (1 + 0.3 * (i % 3)) + rng.normal(0, 8, (h, w, 3))
    return Image.fromarray(np.clip(skin * (1 - a) + spot * a, 0, 255).astype(np.uint8))


def _clinic(root: Path, n: int = 24, resolution: int = 32, size=(80, 60), noise: bool = False,
            patients: list[str] | None = None) -> Path:
    """`root/clinic/{img/caseNNN.jpg, labels.csv}` and `root/config.yaml` (dataset `clinic`); the config path."""
    images = root / "clinic" / "img"
    images.mkdir(parents=True, exist_ok=True)
    rows = ["path,label,patient_id"]
    for i in range(n):
        _picture(i, size, noise).save(images / f"case{i:03d}.jpg", quality=95)
        patient = patients[i] if patients else f"P{i:03d}"
        rows.append(f"img/case{i:03d}.jpg,{LABELS[i % 3]},{patient}")
    (root / "clinic" / "labels.csv").write_text("\n".join(rows) + "\n")
    config = {"sources": {"clinic": {"type": "folder", "path": str(root / "clinic")}},
              "ingest": {"workers": 1, "shards": 1},
              "datasets": {"clinic": {"labels": "ham7", "resolution": resolution, "sources": [{"source": "clinic"}],
                                      "split": {"group_by": "patient",
                                                "fractions": {"train": 0.7, "validation": 0.15, "test": 0.15}}}}}
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root / "config.yaml"


def _options(config: Path) -> IngestOptions:
    return IngestOptions.from_config(validate_config(yaml.safe_load(config.read_text())), dataset="clinic")


def _ingest_cmd(config: Path, out: Path) -> list[str]:
    return [*DERMSYNTH, "data", "ingest", "--config", str(config), "--dataset", "clinic", "--out", str(out)]


def _accounted(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ingested, rejections) of a finished ingest, after checking the store holds exactly the ingested keys."""
    ingested = pd.read_csv(out / "ingested.csv", dtype=str, keep_default_na=False)
    rejections = pd.read_csv(out / "rejections.csv", dtype=str, keep_default_na=False)
    store = LmdbImageStore(out / "lmdb")
    assert store.keys() == sorted(ingested["key"]) and store.index["count"] == len(ingested)
    summary = json.loads((out / "ingest.json").read_text())
    assert summary["images_ingested"] == len(ingested) and summary["rejections"] == len(rejections)
    store.close()
    return ingested, rejections


# --- kind 3: every file of a folder is read, or said why not -----------------------------------------------

def test_images_behind_a_linked_folder_are_read(tmp_path):
    """Case 07: the image folder is a symbolic link to a shared drive: every image is stored."""
    config = _clinic(tmp_path)
    (tmp_path / "share").mkdir()
    (tmp_path / "clinic" / "img").rename(tmp_path / "share" / "img")
    (tmp_path / "clinic" / "img").symlink_to(Path("..") / "share" / "img")
    ingest(_options(config), tmp_path / "out")
    ingested, rejections = _accounted(tmp_path / "out")
    assert len(ingested) == 24 and set(rejections["reason"]) == {"not_an_image"}  # labels.csv itself


def test_loops_aliases_and_broken_links_are_rejections_with_the_reason(tmp_path):
    """A link back to a folder above (a loop), a second name for a folder, broken links: each one rejection row
    that says so; the real images are each stored once; a row behind a broken link names the link."""
    config = _clinic(tmp_path, n=6)
    clinic = tmp_path / "clinic"
    (clinic / "img" / "loop").symlink_to("..")
    (clinic / "alias").symlink_to("img")
    (clinic / "img" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (clinic / "lost").symlink_to(tmp_path / "unmounted")
    with open(clinic / "labels.csv", "a") as handle:
        handle.write("lost/case100.jpg,nv,P100\n")
    ingest(_options(config), tmp_path / "out")
    ingested, rejections = _accounted(tmp_path / "out")
    assert sorted(ingested["member"]) == [f"img/case{i:03d}.jpg" for i in range(6)]
    by_member = dict(zip(rejections["member"], rejections["reason"]))
    assert by_member["img/loop"] == "link_to_folder_read" and by_member["alias"] == "link_to_folder_read"
    assert by_member["img/gone.jpg"] == "broken_link" and by_member["lost"] == "broken_link"
    row = rejections[rejections["image_id"] == "lost/case100.jpg"].iloc[0]
    assert row["reason"] == "missing_image" and "symbolic link" in row["message"] and "unmounted" in row["message"]


def test_a_symbolic_link_stored_in_a_zip_is_a_rejection(tmp_path):
    config = _clinic(tmp_path, n=3)
    archive = tmp_path / "clinic" / "images.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted((tmp_path / "clinic" / "img").iterdir()):
            z.write(path, f"img/{path.name}")
        link = zipfile.ZipInfo("img/extra.jpg")
        link.external_attr = (0o120777 << 16)
        z.writestr(link, "case000.jpg")
    raw = yaml.safe_load(config.read_text())
    raw["sources"]["clinic"]["images"] = "images.zip"
    config.write_text(yaml.safe_dump(raw))
    ingest(_options(config), tmp_path / "out")
    ingested, rejections = _accounted(tmp_path / "out")
    assert len(ingested) == 3
    assert rejections.set_index("member").loc["img/extra.jpg", "reason"] == "symbolic_link_in_zip"


# --- kind 4: a full disk, a wrong output folder: one line, and the rerun resumes ------------------------------

def test_full_disk_during_ingest_is_one_line_and_the_rerun_completes(tmp_path):
    """Case 09: the file-size limit (the kernel reports it like a full disk) stops the ingest while it writes the
    store: one line naming the shard file and the fix, no traceback; the same command then completes."""
    config = _clinic(tmp_path, n=60, resolution=128, size=(300, 300), noise=True)
    out = tmp_path / "out"

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_500_000, 1_500_000))

    full = subprocess.run(_ingest_cmd(config, out), preexec_fn=limit, capture_output=True, text=True, timeout=300)
    assert full.returncode == 2 and "Traceback" not in full.stderr, full.stderr[-2000:]
    last = full.stderr.strip().splitlines()[-1]
    assert "lmdb.partial/shard-000/data.mdb" in last and "run the same command again" in last
    again = subprocess.run(_ingest_cmd(config, out), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    ingested, _ = _accounted(out)
    assert len(ingested) == 60
    assert json.loads((out / "ingest.json").read_text())["decode"]["resumed_from_partial"] > 0


def test_an_output_that_is_a_file_is_one_line_before_any_work(tmp_path):
    config = _clinic(tmp_path, n=3)
    (tmp_path / "out").write_text("not a folder")
    result = subprocess.run(_ingest_cmd(config, tmp_path / "out"), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(tmp_path / "out") in result.stderr.strip().splitlines()[-1]
    assert "images to store" not in result.stderr  # refused before reading the sources


# --- kind 2: one writer per output; a kill at any moment leaves complete outputs ----------------------------

def test_an_ingest_is_refused_while_another_writes_the_folder(tmp_path):
    config = _clinic(tmp_path, n=3)
    with exclusive(tmp_path / "out", "ingest"):
        result = subprocess.run(_ingest_cmd(config, tmp_path / "out"), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"another ingest (pid {os.getpid()}" in result.stderr and "is writing to" in result.stderr
    assert not (tmp_path / "out" / "ingested.csv").exists()


def test_two_ingests_started_together_one_refused(tmp_path):
    config = _clinic(tmp_path, n=60, resolution=128, size=(600, 450))
    out = tmp_path / "out"
    winner = assert_one_refused(start_together([_ingest_cmd(config, out)] * 2, cwd=tmp_path))
    assert "60 images stored" in winner.stderr
    assert len(_accounted(out)[0]) == 60


@pytest.mark.workflow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ingest_killed_at_a_random_moment_leaves_complete_outputs_and_resumes(tmp_path, seed):
    config = _clinic(tmp_path, n=60, resolution=128, size=(600, 450))
    out = tmp_path / "out"
    subprocess.run(_ingest_cmd(config, out), check=True, capture_output=True, timeout=300)  # an earlier run's outputs
    (tmp_path / "clinic" / "img" / "case000.jpg").unlink()  # this run's data differs: a rejection more
    killed_at(_ingest_cmd(config, out), seed=seed, cwd=tmp_path, low=0.5, high=8.0)
    assert_no_partial_outputs(out)
    if (out / "ingest.json").exists():  # complete, and consistent with the store
        _accounted(out)
    subprocess.run(_ingest_cmd(config, out), check=True, capture_output=True, timeout=300)
    ingested, rejections = _accounted(out)
    assert len(ingested) == 59 and "img/case000.jpg" in set(rejections["image_id"])
    assert not list(out.glob(".*.tmp"))  # leftovers of the killed run are gone


def test_split_is_refused_while_another_writes_its_manifest(tmp_path):
    config = _clinic(tmp_path, n=12)
    ingest(_options(config), tmp_path / "out")
    manifest = tmp_path / "out" / "manifest.csv"
    options = SplitOptions.from_config(validate_config(yaml.safe_load(config.read_text())), dataset="clinic")
    with exclusive(manifest, "split"):
        with pytest.raises(BusyError, match="is writing to"):
            write_split(options, tmp_path / "out" / "ingested.csv", manifest, tmp_path / "out" / "splits.json")
    write_split(options, tmp_path / "out" / "ingested.csv", manifest, tmp_path / "out" / "splits.json")
    assert len(pd.read_csv(manifest)) == 12


@pytest.mark.parametrize("seed", [0, 1])
def test_split_killed_at_a_random_moment_leaves_a_consistent_pair(tmp_path, seed):
    config = _clinic(tmp_path, n=12)
    out = tmp_path / "out"
    ingest(_options(config), out)
    command = [*DERMSYNTH, "data", "split", "--config", str(config), "--dataset", "clinic", "--ingested",
               str(out / "ingested.csv"), "--manifest", str(out / "manifest.csv"), "--summary", str(out / "splits.json")]
    killed_at(command, seed=seed, cwd=tmp_path, low=0.2, high=3.0)
    assert_no_partial_outputs(out)
    if (out / "splits.json").exists():  # the summary is written last: the manifest beside it is its own
        summary = json.loads((out / "splits.json").read_text())
        assert sum(summary["images"].values()) == len(pd.read_csv(out / "manifest.csv"))
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    assert sum(json.loads((out / "splits.json").read_text())["images"].values()) == 12


def test_image_set_writer_keeps_the_callers_lock_and_cleans_dead_staging(tmp_path):
    out = tmp_path / "set"
    dead = tmp_path / f".set.{2**22 + 12345}.deadbeef.tmp"  # a staging folder of a process that no longer runs
    (dead / "lmdb").mkdir(parents=True)
    with exclusive(out, "generate"):
        writer = ImageSetWriter(out)
        assert not dead.exists() and writer.staging.name.startswith(f".set.{os.getpid()}.")
        pixels = np.zeros((8, 8, 3), np.uint8)
        from dermsynth.data.lmdb_store import encode_pixels
        writer.add_many([("a", encode_pixels(pixels, "png"))])
        writer.finish(pd.DataFrame({"key": ["a"], "label": ["nv"]}), "ham7", 8)
        with pytest.raises(BusyError):  # the lock moved with the folder and is still held
            with exclusive(out, "generate"):
                pass
    assert LmdbImageStore(out / "lmdb").keys() == ["a"]
    assert [p.name for p in tmp_path.iterdir()] == ["set"]


def test_synthetic_dataset_and_preview_refuse_a_second_writer(tmp_path):
    from dermsynth.data.preview import preview_grid
    from dermsynth.synthetic.datasets import build_synthetic_dataset
    from dermsynth.synthetic.options import SyntheticDatasetOptions
    with exclusive(tmp_path / "sa", "synthetic-dataset"):
        with pytest.raises(BusyError, match="another synthetic-dataset"):
            build_synthetic_dataset(SyntheticDatasetOptions(name="SA-2", size=2, seed=0), [], "m.csv", tmp_path / "sa")
    with exclusive(tmp_path / "preview.png", "preview"):
        with pytest.raises(BusyError, match="another preview"):
            preview_grid(tmp_path / "lmdb", tmp_path / "m.csv", tmp_path / "preview.png")


def test_demo_archives_refuse_a_second_writer(tmp_path):
    from dermsynth.data.demo.archives import write_demo_archives
    with exclusive(tmp_path / "demo", "demo-archives"):
        with pytest.raises(BusyError, match="another demo-archives"):
            write_demo_archives({"output": str(tmp_path / "demo"), "seed": 0})


# --- kind 1: a partial store is reused only for the same files and settings ----------------------------------

def test_a_partial_store_of_other_files_is_set_aside(tmp_path, monkeypatch, capsys):
    from dermsynth.data import ingest as ingest_module
    config = _clinic(tmp_path, n=6)
    out = tmp_path / "out"
    real_finalise = ingest_module._finalise

    def stop(*args, **kwargs):
        raise KeyboardInterrupt  # a run stopped after decoding every image into lmdb.partial
    monkeypatch.setattr(ingest_module, "_finalise", stop)
    with pytest.raises(KeyboardInterrupt):
        ingest(_options(config), out)
    monkeypatch.setattr(ingest_module, "_finalise", real_finalise)

    changed = tmp_path / "clinic" / "img" / "case003.jpg"  # same name, other picture
    _picture(99).save(changed, quality=95)
    capsys.readouterr()
    summary = ingest(_options(config), out)
    said = capsys.readouterr().err
    assert "was left by an ingest of other settings or files" in said and "superseded-" in said
    assert summary["decode"]["resumed_from_partial"] == 0
    assert len(list(out.glob("superseded-*/lmdb.partial"))) == 1
    store = LmdbImageStore(out / "lmdb")
    expected = decode_image(changed.read_bytes(), 32, "reject", draft=True).pixels
    assert np.array_equal(store.get("clinic/img/case003"), expected)


def test_a_partial_store_of_the_same_files_is_resumed(tmp_path, monkeypatch):
    from dermsynth.data import ingest as ingest_module
    config = _clinic(tmp_path, n=6)
    out = tmp_path / "out"
    real_finalise = ingest_module._finalise

    def stop(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(ingest_module, "_finalise", stop)
    with pytest.raises(KeyboardInterrupt):
        ingest(_options(config), out)
    monkeypatch.setattr(ingest_module, "_finalise", real_finalise)
    summary = ingest(_options(config), out)
    assert summary["decode"]["resumed_from_partial"] == 6 and summary["decode"]["decoded_this_run"] == 0
    assert not list(out.glob("superseded-*"))


# --- kind 6: missing ids, images beyond the decoder's limit -------------------------------------------------

@pytest.mark.parametrize("spelling", ["NA", "N/A", "NaN", "nan", "#N/A", "null", "NULL", "None", "", "-", "?", "  ",
                                      " na "])
def test_every_spelling_of_missing_is_missing(spelling):
    assert clean_id(spelling) == ""
    assert clean_id(f" P{spelling.strip()}1 ") == f"P{spelling.strip()}1"  # a real id that contains one is kept


def test_missing_spellings_never_group_images():
    frame = pd.DataFrame({"key": ["a", "b", "c", "d", "e"], "patient_id": ["NA", "NA", "#N/A", "P1", "P1"],
                          "lesion_id": ["null", "null", "", "", ""]})
    groups = group_ids(frame, "patient").tolist()
    assert groups == ["image:a", "image:b", "image:c", "patient:P1", "patient:P1"]
    assert {"na", "#n/a", "null", "nan"} <= MISSING_SPELLINGS


def test_patients_spelled_na_are_not_one_patient_after_ingest_and_split(tmp_path):
    config = _clinic(tmp_path, n=12, patients=["NA"] * 6 + ["#N/A"] * 3 + ["P1", "P1", "null"])
    out = tmp_path / "out"
    ingest(_options(config), out)
    ingested, _ = _accounted(out)
    assert set(ingested["patient_id"]) == {"", "P1"}
    options = SplitOptions.from_config(validate_config(yaml.safe_load(config.read_text())), dataset="clinic")
    write_split(options, out / "ingested.csv", out / "manifest.csv", out / "splits.json")
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert manifest["group"].nunique() == 11  # 10 images without a patient, one patient with 2
    assert not manifest["group"].str.contains("NA|null", case=False).any()


def test_a_missing_label_or_path_is_said_as_missing(tmp_path):
    config = _clinic(tmp_path, n=3)
    with open(tmp_path / "clinic" / "labels.csv", "a") as handle:
        handle.write("img/case000.jpg,NA,P9\nNA,nv,P8\n")
    labels = (tmp_path / "clinic" / "labels.csv").read_text().replace("img/case000.jpg,mel,P000\n", "")
    (tmp_path / "clinic" / "labels.csv").write_text(labels)
    ingest(_options(config), tmp_path / "out")
    _, rejections = _accounted(tmp_path / "out")
    reasons = dict(zip(rejections["reason"], rejections["message"]))
    assert "label is missing ('NA')" in reasons["missing_label"]
    assert "path is missing ('NA')" in reasons["missing_path"]


def _encoded(fmt: str, side: int) -> bytes:
    buffer = io.BytesIO()
    _picture(0, (side, side)).save(buffer, format=fmt)
    return buffer.getvalue()


def test_images_beyond_the_decoders_limit_are_downscaled_or_rejected_as_too_large(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    # 40,000 pixels; libjpeg's 1/4 scale is 2,500
    decoded = decode_image(_encoded("JPEG", 200), 32, "reject", draft=True)
    assert decoded.pixels.shape == (32, 32, 3) and decoded.original_size == (200, 200)
    assert "beyond_decoder_limit_downscaled" in decoded.conversions
    for fmt, side in (("PNG", 200), ("JPEG", 2000)):  # no reduced decoding / still too big at 1/8
        with pytest.raises(ImageRejected) as caught:
            decode_image(_encoded(fmt, side), 32, "reject", draft=True)
        assert caught.value.reason == "image_too_large"
        assert "beyond the decoder's safety limit of 10,000 pixels" in caught.value.message
        assert "corrupt" not in caught.value.message and "damaged" not in caught.value.message


def test_an_ingest_stores_or_rejects_oversized_images_with_that_reason(tmp_path, monkeypatch):
    config = _clinic(tmp_path, n=3, size=(200, 200))
    Image.fromarray(np.asarray(_picture(1, (200, 200)))).save(tmp_path / "clinic" / "img" / "case001.jpg",
                                                               format="PNG")  # a PNG under a .jpg name
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    ingest(_options(config), tmp_path / "out")
    ingested, rejections = _accounted(tmp_path / "out")
    assert sorted(ingested["member"]) == ["img/case000.jpg", "img/case002.jpg"]
    assert all("beyond_decoder_limit_downscaled" in c for c in ingested["conversions"])
    row = rejections.set_index("member").loc["img/case001.jpg"]
    assert row["reason"] == "image_too_large" and "safety limit" in row["message"]


# --- kind 5: what the data cannot support is said at split time with the key --------------------------------

def test_a_split_without_a_class_names_the_config_key(tmp_path, capsys):
    config = _clinic(tmp_path, n=6, patients=["P1"] * 6)  # one patient: one split holds everything
    ingest(_options(config), tmp_path / "out")
    options = SplitOptions.from_config(validate_config(yaml.safe_load(config.read_text())), dataset="clinic")
    summary = write_split(options, tmp_path / "out" / "ingested.csv", tmp_path / "out" / "manifest.csv",
                          tmp_path / "out" / "splits.json")
    assert summary["images"] == {"train": 6}
    err = capsys.readouterr().err
    assert "no image in the validation split" in err and "datasets.clinic.split.fractions" in err


# --- kind 4: a file of another kind is one line naming it ----------------------------------------------------

def test_split_given_a_table_of_another_kind_or_a_truncated_one_says_so(tmp_path):
    config = _clinic(tmp_path, n=3)
    (tmp_path / "other.csv").write_text("image,MEL,NV\nISIC_1,1,0\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "broken.csv").write_bytes(b'key,label,split_rule\n"abc,nv\n')
    for given, says in (("other.csv", "lacks column(s) key, label, split_rule (it has image, MEL, NV)"),
                        ("empty.csv", "is empty"), ("broken.csv", "truncated or not a CSV table"),
                        ("clinic", "is a folder where a file is needed")):
        result = subprocess.run([*DERMSYNTH, "data", "split", "--config", str(config), "--dataset", "clinic", "--ingested",
                                 str(tmp_path / given), "--manifest", str(tmp_path / "m.csv"), "--summary",
                                 str(tmp_path / "s.json")], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        [line] = result.stderr.strip().splitlines()
        assert str(tmp_path / given) in line and says in line, line


def test_a_store_whose_index_is_truncated_is_one_line(tmp_path):
    from dermsynth.errors import InputError
    (tmp_path / "lmdb").mkdir()
    (tmp_path / "lmdb" / "index.json").write_text('{"resolution": 6')
    with pytest.raises(InputError, match="is not the index of a dermsynth LMDB store"):
        LmdbImageStore(tmp_path / "lmdb")


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB file system (tmpfs; needs root), grown to 64 MiB by `grow()`; unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")

    def grow():
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
    try:
        yield mount, grow
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_really_full_disk_is_one_line_and_the_rerun_after_freeing_space_completes(tmp_path, small_disk):
    mount, grow = small_disk
    config = _clinic(tmp_path, n=60, resolution=128, size=(300, 300), noise=True)
    out = mount / "out"
    full = subprocess.run(_ingest_cmd(config, out), capture_output=True, text=True, timeout=300)
    assert full.returncode == 2 and "Traceback" not in full.stderr, full.stderr[-2000:]
    last = full.stderr.strip().splitlines()[-1]
    assert str(out) in last and ("No space left" in last or "free space" in last), last
    grow()
    again = subprocess.run(_ingest_cmd(config, out), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(_accounted(out)[0]) == 60


def test_two_splits_started_together_leave_one_consistent_pair(tmp_path):
    """Split is quick, so the two may or may not overlap: each either finishes or is refused in one line, and the
    manifest and summary left are one assignment."""
    config = _clinic(tmp_path, n=12)
    out = tmp_path / "out"
    ingest(_options(config), out)
    command = [*DERMSYNTH, "data", "split", "--config", str(config), "--dataset", "clinic", "--ingested",
               str(out / "ingested.csv"), "--manifest", str(out / "manifest.csv"), "--summary", str(out / "splits.json")]
    results = start_together([command, command], cwd=tmp_path)
    assert any(r.returncode == 0 for r in results)
    for r in results:
        assert r.returncode == 0 or (r.returncode == 2 and "is writing to" in r.stderr and "Traceback" not in r.stderr)
    assert_no_partial_outputs(out)
    summary = json.loads((out / "splits.json").read_text())
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert summary["images"] == manifest["split"].value_counts().sort_index().to_dict()
