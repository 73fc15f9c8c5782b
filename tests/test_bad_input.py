"""Every kind of bad input gets a clear error or a rejection entry; nothing is dropped silently."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermsynth.config import validate_config
from dermsynth.data.images import decode_image
from dermsynth.data.ingest import ingest
from dermsynth.data.options import IngestOptions
from dermsynth.data.sources import make_reader
from dermsynth.errors import InputError

COLUMNS = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset"]


def _png(array: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", array)
    assert ok
    return buffer.tobytes()


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bad_archive(demo_root, tmp_path_factory):
    """A HAM10000-layout archive with eight good images and one of every bad case."""
    root = tmp_path_factory.mktemp("bad-ham")
    demo = demo_root / "demo/HAM10000"
    meta = pd.read_csv(demo / "HAM10000_metadata.csv", dtype=str, keep_default_na=False)
    with zipfile.ZipFile(demo / "HAM10000_images_part_1.zip") as z:
        names = sorted(z.namelist())[:8]
        good = {Path(n).stem: z.read(n) for n in names}
    rows = meta[meta["image_id"].isin(good)].to_dict("records")
    rgb = np.asarray(Image.open(io.BytesIO(next(iter(good.values())))).convert("RGB"))
    rgba = np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 255, np.uint8)])
    rgba_holes = rgba.copy()
    rgba_holes[:100, :100, 3] = 0
    members = {f"{k}.jpg": v for k, v in good.items()}
    members.update({
        "ISIC_9000001.jpg": np.random.default_rng(0).bytes(5000),                     # not an image at all
        "ISIC_9000002.jpg": next(iter(good.values()))[:4000],                          # truncated JPEG
        "ISIC_9000004.jpg": next(iter(good.values())),                                 # in archive, not listed
        "ISIC_9000005.jpg": list(good.values())[1],                                    # listed with unknown dx
        "ISIC_9000006.jpg": _jpeg(Image.fromarray(rgb).convert("L")),                  # grayscale
        "ISIC_9000007.jpg": _jpeg(Image.fromarray(rgb).convert("CMYK")),               # CMYK
        "ISIC_9000008.png": _png(rgb[..., ::-1].astype(np.uint16) * 257),              # 16-bit RGB
        "ISIC_9000009.png": _png((rgb.mean(-1) * 257).astype(np.uint16)),              # 16-bit grayscale
        "ISIC_9000010.png": _png(rgba_holes),                                          # alpha with holes
        "ISIC_9000011.png": _png(rgba),                                                # opaque alpha
        "../ISIC_9000012.jpg": list(good.values())[2],                                 # escapes the archive
    })
    extra = [{"lesion_id": f"HAM_99{i:05d}", "image_id": f"ISIC_90000{i:02d}", "dx": "nv", "dx_type": "histo",
              "age": "50.0", "sex": "male", "localization": "back", "dataset": "rosendahl"}
             for i in (1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12)]
    extra[3]["dx"] = "melanomaX"
    duplicate = dict(rows[0])
    table = pd.DataFrame(rows + extra + [duplicate], columns=COLUMNS)
    table.to_csv(root / "HAM10000_metadata.csv", index=False)
    with zipfile.ZipFile(root / "HAM10000_images_part_1.zip", "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    zipfile.ZipFile(root / "HAM10000_images_part_2.zip", "w").close()
    return root, rgb


def _config(root: Path, grayscale: str = "reject") -> dict:
    return validate_config({
        "sources": {"ham": {"type": "ham10000", "path": str(root)}},
        "ingest": {"workers": 1, "shards": 2, "grayscale": grayscale},
        "datasets": {"bad": {"labels": "ham7", "resolution": 32, "sources": [{"source": "ham"}],
                             "split": {"group_by": "lesion"}}},
    })


def test_each_bad_input_has_its_reason(bad_archive, tmp_path):
    root, _ = bad_archive
    ingest(IngestOptions.from_config(_config(root), dataset="bad"), tmp_path)
    rejections = pd.read_csv(tmp_path / "rejections.csv", dtype=str, keep_default_na=False)
    reason = dict(zip(rejections["key"], rejections["reason"]))
    assert reason["ISIC_9000001"] == "corrupt_image"
    assert reason["ISIC_9000002"] == "corrupt_image"
    assert reason["ISIC_9000003"] == "missing_image"
    assert reason["ISIC_9000004"] == "not_in_metadata"
    assert reason["ISIC_9000005"] == "unknown_label"
    assert reason["ISIC_9000006"] == "grayscale_image"
    assert reason["ISIC_9000009"] == "grayscale_image"
    assert reason["ISIC_9000012"] == "unsafe_member_path"
    assert (rejections["reason"] == "duplicate_id").sum() == 1
    unknown = rejections[rejections["key"] == "ISIC_9000005"].iloc[0]
    assert "melanomaX" in unknown["message"] and unknown["row"] and unknown["member"] == "ISIC_9000005.jpg"
    assert all(len(m) > 30 for m in rejections["message"])  # a sentence with the fix, not just a code

    ingested = pd.read_csv(tmp_path / "ingested.csv", dtype=str, keep_default_na=False).set_index("key")
    assert "cmyk_to_rgb" in ingested.loc["ISIC_9000007", "conversions"]
    assert "16bit_to_8bit" in ingested.loc["ISIC_9000008", "conversions"]
    assert "alpha_composited_on_black" in ingested.loc["ISIC_9000010", "conversions"]
    assert "opaque_alpha_dropped" in ingested.loc["ISIC_9000011", "conversions"]


def test_every_file_and_every_row_is_accounted_for_exactly_once(bad_archive, tmp_path):
    root, _ = bad_archive
    ingest(IngestOptions.from_config(_config(root), dataset="bad"), tmp_path)
    ingested = pd.read_csv(tmp_path / "ingested.csv", dtype=str, keep_default_na=False)
    rejections = pd.read_csv(tmp_path / "rejections.csv", dtype=str, keep_default_na=False)
    outcome = pd.concat([ingested[["archive", "member", "row"]], rejections[["archive", "member", "row"]]])
    with zipfile.ZipFile(root / "HAM10000_images_part_1.zip") as z:
        files = sorted(z.namelist())
    seen_files = sorted(outcome.loc[outcome["member"] != "", "member"])
    assert seen_files == files
    rows = sorted(outcome.loc[outcome["row"] != "", "row"].astype(int))
    assert rows == list(range(2, 2 + len(pd.read_csv(root / "HAM10000_metadata.csv"))))


def test_grayscale_can_be_replicated_on_request(bad_archive, tmp_path):
    root, _ = bad_archive
    ingest(IngestOptions.from_config(_config(root, grayscale="replicate"), dataset="bad"), tmp_path)
    ingested = pd.read_csv(tmp_path / "ingested.csv", dtype=str, keep_default_na=False).set_index("key")
    assert "grayscale_replicated" in ingested.loc["ISIC_9000006", "conversions"]
    assert "I;16_to_8bit" in ingested.loc["ISIC_9000009", "conversions"] or \
        "grayscale_replicated" in ingested.loc["ISIC_9000009", "conversions"]


def test_converted_images_keep_their_colours(bad_archive):
    _, rgb = bad_archive
    reference = decode_image(_png(rgb[..., ::-1]), 64, "reject", draft=True).pixels.astype(int)
    for data, tolerance in ((_jpeg(Image.fromarray(rgb).convert("CMYK")), 6.0),
                            (_png(rgb[..., ::-1].astype(np.uint16) * 257), 0.5)):
        decoded = decode_image(data, 64, "reject", draft=True).pixels.astype(int)
        assert np.abs(decoded - reference).mean() < tolerance


def test_missing_column_is_an_error_naming_file_and_column(bad_archive, tmp_path):
    root, _ = bad_archive
    broken = tmp_path / "ham"
    broken.mkdir()
    for name in ("HAM10000_images_part_1.zip", "HAM10000_images_part_2.zip"):
        (broken / name).write_bytes((root / name).read_bytes())
    pd.read_csv(root / "HAM10000_metadata.csv").drop(columns=["dx"]).to_csv(broken / "HAM10000_metadata.csv", index=False)
    with pytest.raises(InputError, match=r"HAM10000_metadata.csv is missing column\(s\) 'dx'"):
        make_reader("ham", {"type": "ham10000", "path": str(broken)}).read()

    config = tmp_path / "config.yaml"
    import yaml
    config.write_text(yaml.safe_dump({
        "sources": {"ham": {"type": "ham10000", "path": str(broken)}},
        "datasets": {"bad": {"labels": "ham7", "resolution": 32, "sources": [{"source": "ham"}]}}}))
    result = subprocess.run([sys.executable, "-m", "dermsynth.cli", "data", "ingest", "--config", str(config), "--dataset",
                             "bad", "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 2
    assert "missing column(s) 'dx'" in result.stderr and "Traceback" not in result.stderr


def test_missing_metadata_file_is_an_error(tmp_path):
    with pytest.raises(InputError, match=r"HAM10000_metadata.csv not found"):
        make_reader("ham", {"type": "ham10000", "path": str(tmp_path)}).read()
