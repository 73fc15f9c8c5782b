"""Each archive reader against the demo archives, and the accounting invariant for all of them."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pandas as pd
import pytest

from dermsynth.data.sources import make_reader
from dermsynth.data.sources.base import isic_key


def _all_files(container: Path) -> list[str]:
    """Every file of a zip or folder, listed independently of the code under test."""
    if container.is_dir():
        return [p.relative_to(container).as_posix() for p in container.rglob("*") if p.is_file()]
    with zipfile.ZipFile(container) as archive:
        return [i.filename for i in archive.infolist() if not i.is_dir()]


def _rows(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.mark.parametrize("source", ["ham10000", "isic2018_validation", "isic2018_test", "isic2020",
                                    "isic2019_melanoma", "fitzpatrick17k", "derm7pt"])
def test_every_image_file_is_a_record_or_a_rejection_exactly_once(demo_cfg, source):
    reader = make_reader(source, demo_cfg["sources"][source])
    catalog = reader.read()
    containers = [p for p in reader.required_files() if p.suffix == ".zip" or p.is_dir()]
    members = {(str(c), n) for c in containers for n in _all_files(c)}
    used = [(r.member.container, r.member.name) for r in catalog.records]
    rejected = [(r.archive, r.member) for r in catalog.rejections if r.member]
    assert len(used) + len(rejected) == len(set(used) | set(rejected))  # nothing counted twice
    assert set(used) | set(rejected) == members                        # every file accounted for


def test_ham10000(demo_cfg, demo_root):
    catalog = make_reader("ham10000", demo_cfg["sources"]["ham10000"]).read()
    meta = _rows(demo_root / "demo/HAM10000/HAM10000_metadata.csv")
    assert len(catalog.records) == len(meta) and not catalog.rejections
    by_key = {r.key: r for r in catalog.records}
    for _, row in meta.sample(10, random_state=0).iterrows():
        record = by_key[row["image_id"]]
        assert (record.diagnosis, record.lesion_id, record.melanoma) == (row["dx"], row["lesion_id"], row["dx"] == "mel")
        assert record.attributes["localization"] == row["localization"]


def test_isic2018_one_hot_ground_truth(demo_cfg, demo_root):
    catalog = make_reader("isic2018_test", demo_cfg["sources"]["isic2018_test"]).read()
    gt = _rows(demo_root / "demo/ISIC2018/ISIC2018_Task3_Test_GroundTruth.csv").set_index("image")
    assert len(catalog.records) == len(gt) == 21
    for record in catalog.records:
        assert gt.loc[record.key, record.diagnosis.upper()] == "1.0"
    assert any("LICENSE.txt" in f for f in catalog.ignored_files)


def test_isic2020_patients_targets_and_official_duplicates(demo_cfg, demo_root):
    catalog = make_reader("isic2020", demo_cfg["sources"]["isic2020"]).read()
    gt = _rows(demo_root / "demo/ISIC2020/ISIC_2020_Training_GroundTruth_v2.csv").set_index("image_name")
    duplicates = _rows(demo_root / "demo/ISIC2020/ISIC_2020_Training_Duplicates.csv")
    dropped = {r.key for r in catalog.rejections if r.reason == "official_duplicate"}
    assert dropped == set(duplicates["image_name_2"])
    assert len(catalog.records) == len(gt) - len(duplicates)
    for record in catalog.records:
        assert record.melanoma == (gt.loc[record.key, "target"] == "1")
        assert record.patient_id == gt.loc[record.key, "patient_id"]


def test_isic2019_names_labels_and_overlap_with_ham(demo_cfg, demo_root):
    spec = {**demo_cfg["sources"]["isic2019_melanoma"]}
    spec.pop("include_diagnoses")  # the reader returns every diagnosis; the filter is applied by ingest
    catalog = make_reader("isic2019", spec).read()
    gt = _rows(demo_root / "demo/ISIC2019/ISIC_2019_Training_GroundTruth.csv")
    assert len(catalog.records) == len(gt)
    downsampled = [r for r in catalog.records if r.image_id.endswith("_downsampled")]
    assert downsampled and all(r.key == isic_key(r.image_id) and "_downsampled" not in r.key for r in downsampled)
    expected = {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AK": "akiec", "BKL": "bkl", "DF": "df", "VASC": "vasc",
                "SCC": "scc", "UNK": None}  # ISIC 2019 columns → HAM10000 codes, written out here
    one_hot = gt.set_index("image")[list(expected)].astype(float)
    for record in catalog.records:  # each record's diagnosis is its own row's one-hot column
        column = one_hot.loc[record.image_id].idxmax()
        assert record.raw_label == column and record.diagnosis == expected[column]
        assert record.melanoma == (None if column == "UNK" else column == "MEL")
    ham_ids = set(_rows(demo_root / "demo/HAM10000/HAM10000_metadata.csv")["image_id"])
    assert len({r.key for r in catalog.records} & ham_ids) == 8


def test_fitzpatrick17k_keeps_lesion_labels_and_reports_the_rest(demo_cfg, demo_root):
    catalog = make_reader("fitzpatrick17k", demo_cfg["sources"]["fitzpatrick17k"]).read()
    meta = _rows(demo_root / "demo/Fitzpatrick17k/fitzpatrick17k.csv")
    excluded = [r for r in catalog.rejections if r.reason == "excluded_label"]
    assert len(catalog.records) + len(excluded) == len(meta)
    assert all(r.diagnosis in ("mel", "nv", "bcc", "akiec", "bkl", "df", "vasc", "scc") for r in catalog.records)
    assert all("label_map" in r.message for r in excluded)


def test_derm7pt_uses_dermoscopic_images_and_accounts_for_clinical_ones(demo_cfg):
    catalog = make_reader("derm7pt", demo_cfg["sources"]["derm7pt"]).read()
    clinical = [r for r in catalog.rejections if r.reason == "not_dermoscopic"]
    assert len(catalog.records) == len(clinical) == 8
    assert all(r.member.name.endswith("d.jpg") for r in catalog.records)
    assert all(r.patient_id.startswith("case") for r in catalog.records)


def test_plain_folder_with_csv(tmp_path, demo_root):
    images = sorted((demo_root / "demo/Fitzpatrick17k/images").iterdir())[:4]
    (tmp_path / "imgs/sub").mkdir(parents=True)
    for i, image in enumerate(images):
        (tmp_path / "imgs/sub" / f"case{i}.jpg").write_bytes(image.read_bytes())
    pd.DataFrame({"path": [f"sub/case{i}.jpg" for i in range(4)], "label": ["Melanoma", "benign", "mel", "naevus"],
                  "patient_id": ["p1", "p1", "p2", "p3"]}).to_csv(tmp_path / "labels.csv", index=False)
    spec = {"type": "folder", "path": str(tmp_path), "images": "imgs", "label_map": {"Melanoma": "mel"}}
    catalog = make_reader("hospital", spec).read()
    by_key = {r.key: r for r in catalog.records}
    assert by_key["hospital/sub/case0"].diagnosis == "mel"
    assert by_key["hospital/sub/case1"].melanoma is False and by_key["hospital/sub/case1"].diagnosis is None
    assert by_key["hospital/sub/case2"].patient_id == "p2"
    [unknown] = catalog.rejections
    assert unknown.reason == "unknown_label" and "row 5" in unknown.message and "naevus" in unknown.message
    assert unknown.member == "sub/case3.jpg"  # the file is attached to its row's rejection, not reported twice
