"""The demo archives follow the published layouts, are deterministic, and carry real signal."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dermsynth.config import validate_config
from dermsynth.data.demo.archives import expected_outputs, write_demo_archives

from .conftest import demo_config


def _csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_every_expected_output_exists(demo_cfg):
    files, folders = expected_outputs(demo_cfg["demo"])
    assert all(Path(f).is_file() for f in files)
    assert all(Path(d).is_dir() for d in folders)


def test_published_csv_columns(demo_root):
    d = demo_root / "demo"
    assert list(_csv(d / "HAM10000/HAM10000_metadata.csv").columns) == [
        "lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset"]
    assert list(_csv(d / "ISIC2018/ISIC2018_Task3_Test_GroundTruth.csv").columns) == [
        "image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    assert list(_csv(d / "ISIC2020/ISIC_2020_Training_GroundTruth_v2.csv").columns) == [
        "image_name", "patient_id", "lesion_id", "sex", "age_approx", "anatom_site_general_challenge",
        "diagnosis", "benign_malignant", "target"]
    assert list(_csv(d / "ISIC2020/ISIC_2020_Training_Duplicates.csv").columns) == ["image_name_1", "image_name_2"]
    assert list(_csv(d / "ISIC2019/ISIC_2019_Training_GroundTruth.csv").columns) == [
        "image", "MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    assert list(_csv(d / "ISIC2019/ISIC_2019_Training_Metadata.csv").columns) == [
        "image", "age_approx", "anatom_site_general", "lesion_id", "sex"]
    assert {"md5hash", "fitzpatrick_scale", "label", "three_partition_label", "url"} <= set(
        _csv(d / "Fitzpatrick17k/fitzpatrick17k.csv").columns)
    assert {"case_num", "diagnosis", "clinic", "derm"} <= set(_csv(d / "Derm7pt/meta/meta.csv").columns)


def test_zip_structures_match_the_releases(demo_root):
    d = demo_root / "demo"
    ham = zipfile.ZipFile(d / "HAM10000/HAM10000_images_part_1.zip").namelist()
    assert ham and all(n.startswith("ISIC_") and n.endswith(".jpg") and "/" not in n for n in ham)
    test = zipfile.ZipFile(d / "ISIC2018/ISIC2018_Task3_Test_Input.zip").namelist()
    assert all(n.startswith("ISIC2018_Task3_Test_Input/") for n in test)
    assert "ISIC2018_Task3_Test_Input/LICENSE.txt" in test
    isic2020 = zipfile.ZipFile(d / "ISIC2020/ISIC_2020_Training_JPEG.zip").namelist()
    assert all(n.startswith("train/ISIC_") and n.endswith(".jpg") for n in isic2020)
    isic2019 = zipfile.ZipFile(d / "ISIC2019/ISIC_2019_Training_Input.zip").namelist()
    assert any(n.endswith("_downsampled.jpg") for n in isic2019)
    assert all(n.startswith("ISIC_2019_Training_Input/") for n in isic2019)


def test_isic2019_contains_ham10000_images_byte_for_byte(demo_root):
    d = demo_root / "demo"
    ham = {}
    for part in (1, 2):
        with zipfile.ZipFile(d / f"HAM10000/HAM10000_images_part_{part}.zip") as z:
            ham.update({Path(n).stem: z.read(n) for n in z.namelist()})
    with zipfile.ZipFile(d / "ISIC2019/ISIC_2019_Training_Input.zip") as z:
        shared = [n for n in z.namelist() if Path(n).stem in ham]
        assert len(shared) == 8
        assert all(z.read(n) == ham[Path(n).stem] for n in shared)


def test_class_imbalance_like_the_real_sets(demo_root):
    d = demo_root / "demo"
    ham = _csv(d / "HAM10000/HAM10000_metadata.csv")
    assert 0.55 < (ham["dx"] == "nv").mean() < 0.75
    assert set(ham["dx"]) == {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"}
    isic = _csv(d / "ISIC2020/ISIC_2020_Training_GroundTruth_v2.csv")
    assert 0 < (isic["target"] == "1").mean() <= 0.08


def test_several_images_per_lesion_and_patient(demo_root):
    d = demo_root / "demo"
    ham = _csv(d / "HAM10000/HAM10000_metadata.csv")
    assert ham.groupby("lesion_id").size().max() >= 2
    isic = _csv(d / "ISIC2020/ISIC_2020_Training_GroundTruth_v2.csv")
    assert isic.groupby("patient_id").size().min() >= 1 and isic.groupby("patient_id").size().max() >= 5


def test_sizes_and_aspect_ratios_vary(demo_root):
    with zipfile.ZipFile(demo_root / "demo/ISIC2020/ISIC_2020_Training_JPEG.zip") as z:
        sizes = {Image.open(io.BytesIO(z.read(n))).size for n in z.namelist()}
    assert len({round(w / h, 2) for w, h in sizes}) >= 3
    truth = _csv(demo_root / "demo/demo_truth.csv")
    assert truth["skin_type"].nunique() >= 3


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    def digest(seed: int, where: Path, workers: int = 1) -> dict:
        raw = demo_config(where)
        raw["demo"].update(seed=seed, ham10000={"lesions": 8, "isic2018_test_images": 7, "isic2018_validation_images": 7},
                           isic2020={"patients": 3, "images": 12, "official_duplicates": 1, "max_side": 128},
                           isic2019={"images": 10, "from_ham10000": 2}, fitzpatrick17k={"images": 3},
                           derm7pt={"cases": 2})
        root = write_demo_archives(validate_config(raw)["demo"], workers=workers)
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*"))  # the provenance has a timestamp, the lock its writer's pid
                if p.is_file() and p.name not in ("demo_provenance.json", ".dermsynth-lock")}

    first, again, other = digest(1, tmp_path / "a"), digest(1, tmp_path / "b"), digest(2, tmp_path / "c")
    assert first == again
    assert digest(1, tmp_path / "parallel", workers=2) == first  # the number of processes changes nothing
    assert first["HAM10000/HAM10000_images_part_1.zip"] != other["HAM10000/HAM10000_images_part_1.zip"]


def _dark_corners(pixels: np.ndarray) -> bool:
    h, w = pixels.shape[:2]
    k = max(2, min(h, w) // 20)
    corners = [pixels[:k, :k], pixels[:k, -k:], pixels[-k:, :k], pixels[-k:, -k:]]
    return float(np.mean([c.mean() for c in corners])) < 25


def test_dermatoscope_frames_are_far_more_common_in_malignant_images(tmp_path):
    """The ISIC bias, measured on the pixels: black frame corners in melanoma vs benign images."""
    raw = demo_config(tmp_path)
    raw["demo"]["isic2020"] = {"patients": 30, "images": 300, "malignant_fraction": 0.3, "official_duplicates": 0,
                               "max_side": 96}
    cfg = validate_config(raw)["demo"]
    from dermsynth.data.demo.archives import write_isic2020
    from dermsynth.progress import Progress
    root = tmp_path / "isic2020"
    write_isic2020(root, cfg["isic2020"], np.random.default_rng(3), [], Progress(300, "t", interval=1e9))
    gt = _csv(root / "ISIC_2020_Training_GroundTruth_v2.csv").set_index("image_name")
    framed = {"0": [], "1": []}
    with zipfile.ZipFile(root / "ISIC_2020_Training_JPEG.zip") as z:
        for name in z.namelist():
            pixels = np.asarray(Image.open(io.BytesIO(z.read(name))).convert("RGB"))
            framed[gt.loc[Path(name).stem, "target"]].append(_dark_corners(pixels))
    malignant_rate, benign_rate = np.mean(framed["1"]), np.mean(framed["0"])
    assert len(framed["1"]) >= 60
    assert malignant_rate > 0.45 and benign_rate < 0.25 and malignant_rate > 2.5 * benign_rate


def test_diagnoses_are_visually_separable(demo_root):
    """Simple colour statistics of the lesion centre tell melanoma from nevus well above chance."""
    d = demo_root / "demo"
    meta = _csv(d / "HAM10000/HAM10000_metadata.csv").set_index("image_id")
    features, labels = [], []
    for part in (1, 2):
        with zipfile.ZipFile(d / f"HAM10000/HAM10000_images_part_{part}.zip") as z:
            for name in z.namelist():
                dx = meta.loc[Path(name).stem, "dx"]
                if dx not in ("mel", "nv"):
                    continue
                pixels = np.asarray(Image.open(io.BytesIO(z.read(name))).convert("RGB"), dtype=np.float32) / 255
                centre = pixels[150:300, 200:400].reshape(-1, 3)
                features.append(np.concatenate([centre.mean(0), centre.std(0)]))
                labels.append(dx == "mel")
    model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=1000))
    scores = cross_val_score(model, np.array(features), np.array(labels), cv=4, scoring="balanced_accuracy")
    assert scores.mean() > 0.75
