"""The failing user inputs of tests/cases/ (see its README), each run the way a user runs it: the
`dermsynth` command in the case's folder. Each test asserts what the README's last column asks for."""

from __future__ import annotations

import io
import json
import shutil
import unicodedata
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermsynth.cli import main
from dermsynth.data.lmdb_store import LmdbImageStore

CASES = Path(__file__).parent / "cases"


@pytest.fixture
def case(tmp_path, monkeypatch):
    """Copy a case folder to a scratch directory and run commands from inside it."""
    def copy(name: str) -> Path:
        folder = tmp_path / name
        shutil.copytree(CASES / name, folder)
        monkeypatch.chdir(folder)
        return folder
    return copy


def _ingest(dataset: str) -> int:
    return main(["data", "ingest", "--config", "config.yaml", "--dataset", dataset, "--out", "out"])


def _split(dataset: str) -> int:
    return main(["data", "split", "--config", "config.yaml", "--dataset", dataset, "--ingested", "out/ingested.csv",
                 "--manifest", "out/manifest.csv", "--summary", "out/splits.json"])


def _tables(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    read = lambda name: pd.read_csv(folder / "out" / name, dtype=str, keep_default_na=False)  # noqa: E731
    return read("ingested.csv"), read("rejections.csv")


def _reference_pixels(path: Path, resolution: int = 32) -> np.ndarray:
    """The file decoded independently of the ingest code: first frame → RGB → centre square → Lanczos."""
    with Image.open(path) as image:
        image.seek(0)
        rgb = image.convert("RGB")
    side = min(rgb.size)
    left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
    square = rgb.crop((left, top, left + side, top + side))
    return np.asarray(square.resize((resolution, resolution), Image.Resampling.LANCZOS))


def _same_picture(stored: np.ndarray, reference: np.ndarray) -> bool:
    """Equal up to JPEG DCT-domain downscaling (ingest decodes big JPEGs at reduced size)."""
    return float(np.abs(stored.astype(int) - reference.astype(int)).mean()) < 1.5


def test_same_stem_two_extensions_never_swap_pixels_or_labels(case):
    folder = case("same-stem-two-extensions")
    assert _ingest("clinic") == 0
    ingested, rejections = _tables(folder)
    labels = pd.read_csv(folder / "data/labels.csv", dtype=str)
    assert len(ingested) == len(labels) == 3 and ingested["key"].is_unique
    store = LmdbImageStore(folder / "out/lmdb")
    for _, row in labels.iterrows():
        [stored] = ingested[ingested["member"] == row["path"]].to_dict("records")
        assert stored["label"] == row["label"]
        assert _same_picture(store.get(stored["key"]), _reference_pixels(folder / "data" / row["path"]))
    png, jpg = (_reference_pixels(folder / "data/img" / n) for n in ("case17.png", "case17.jpg"))
    assert not _same_picture(png, jpg)  # a swap would be seen
    assert set(rejections["reason"]) <= {"not_an_image"}  # labels.csv itself is listed, nothing else


def test_same_stem_row_without_extension_is_ambiguous_with_one_reason_per_file(case):
    folder = case("same-stem-two-extensions")
    (folder / "data/labels.csv").write_text("path,label,patient_id\nimg/case17,mel,P1\nimg/case18.jpg,nv,P3\n")
    assert _ingest("clinic") == 0
    ingested, rejections = _tables(folder)
    assert list(ingested["member"]) == ["img/case18.jpg"]
    row = rejections[rejections["row"] == "2"]
    assert list(row["reason"]) == ["ambiguous_image"]
    assert "the extension (.jpg vs .png)" in row.iloc[0]["message"]
    files = rejections[rejections["reason"] == "ambiguous_member"]
    assert sorted(files["member"]) == ["img/case17.jpg", "img/case17.png"]
    assert all("labels.csv row 2" in m for m in files["message"])


def test_unicode_normalisation_of_names_is_matched(case):
    folder = case("unicode-normalisation-names")
    on_disk = sorted(p.name for p in (folder / "data/img").iterdir())
    assert any(not unicodedata.is_normalized("NFC", n) for n in on_disk)  # the case still has NFD names
    assert _ingest("clinic") == 0
    ingested, rejections = _tables(folder)
    assert len(ingested) == 3
    assert not set(rejections["reason"]) & {"missing_image", "not_in_metadata"}
    assert all(unicodedata.is_normalized("NFC", k) for k in ingested["key"])
    store = LmdbImageStore(folder / "out/lmdb")
    for _, row in ingested.iterrows():  # the member column holds the name as stored on disk
        assert _same_picture(store.get(row["key"]), _reference_pixels(folder / "data" / row["member"]))


def test_zip_with_backslash_separators(case):
    folder = case("zip-backslash-separators")
    assert _ingest("ham") == 0
    ingested, rejections = _tables(folder)
    meta = pd.read_csv(folder / "data/HAM10000_metadata.csv", dtype=str)
    assert sorted(ingested["key"]) == sorted(meta["image_id"]) and rejections.empty
    with zipfile.ZipFile(folder / "data/HAM10000_images_part_1.zip") as archive:
        member = ingested.iloc[0]["member"]
        assert "\\" in member
        reference = _reference_pixels(io.BytesIO(archive.read(member)))
    assert _same_picture(LmdbImageStore(folder / "out/lmdb").get(ingested.iloc[0]["key"]), reference)


def test_backslash_paths_that_escape_are_still_refused(case):
    folder = case("zip-backslash-separators")
    part = folder / "data/HAM10000_images_part_2.zip"
    with zipfile.ZipFile(folder / "data/HAM10000_images_part_1.zip") as source:
        data = source.read(source.namelist()[0])
    with zipfile.ZipFile(part, "w") as archive:
        archive.writestr("..\\..\\ISIC_0099999.jpg", data)
        archive.writestr("C:\\ISIC_0099998.jpg", data)
    assert _ingest("ham") == 0
    _, rejections = _tables(folder)
    unsafe = rejections[rejections["reason"] == "unsafe_member_path"]
    assert sorted(unsafe["member"]) == ["..\\..\\ISIC_0099999.jpg", "C:\\ISIC_0099998.jpg"]


def test_an_ingest_that_stores_nothing_is_an_error(case, capsys):
    folder = case("zip-backslash-separators")
    meta = folder / "data/HAM10000_metadata.csv"
    frame = pd.read_csv(meta, dtype=str)
    frame["image_id"] = "ISIC_9" + frame["image_id"].str[6:]  # no row names a file any more
    frame.to_csv(meta, index=False)
    assert _ingest("ham") == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no image was stored" in error and "out/rejections.csv" in error and "Traceback" not in error
    assert len(pd.read_csv(folder / "out/rejections.csv")) == 12  # the report is there to read
    assert not (folder / "out/ingested.csv").exists() and not (folder / "out/lmdb").exists()


def test_webp_jfif_gif_are_decoded_and_recorded(case):
    folder = case("webp-jfif-gif")
    assert _ingest("clinic") == 0
    ingested, rejections = _tables(folder)
    by_member = ingested.set_index("member")
    assert sorted(by_member.index) == ["img/a.jpg", "img/b.webp", "img/c.jfif", "img/d.gif"]
    assert "from_webp" in by_member.loc["img/b.webp", "conversions"]
    assert by_member.loc["img/c.jfif", "original_format"] == "JPEG"
    assert "from_gif" in by_member.loc["img/d.gif", "conversions"]
    assert "palette_to_rgb" in by_member.loc["img/d.gif", "conversions"]
    store = LmdbImageStore(folder / "out/lmdb")
    for member, row in by_member.iterrows():
        assert _same_picture(store.get(row["key"]), _reference_pixels(folder / "data" / member))
    unlisted = rejections.set_index("member").loc["img/unlisted.webp"]
    assert unlisted["reason"] == "not_in_metadata"


def test_animated_gif_keeps_its_first_frame_and_says_so(case):
    folder = case("webp-jfif-gif")
    frames = [Image.new("RGB", (40, 30), colour) for colour in ((200, 40, 40), (40, 200, 40), (40, 40, 200))]
    frames[0].save(folder / "data/img/d.gif", save_all=True, append_images=frames[1:], duration=50)
    assert _ingest("clinic") == 0
    ingested, _ = _tables(folder)
    row = ingested.set_index("member").loc["img/d.gif"]
    assert "first_of_3_frames" in row["conversions"]
    pixels = LmdbImageStore(folder / "out/lmdb").get(row["key"]).reshape(-1, 3).mean(0)
    assert pixels[0] > 150 and pixels[1] < 90  # red: the first frame, not a later one


def test_formats_that_cannot_be_decoded_get_one_rejection_naming_the_format(case):
    folder = case("webp-jfif-gif")
    (folder / "data/img/e.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    (folder / "data/img/f.dcm").write_bytes(bytes(128) + b"DICM" + bytes(64))
    (folder / "data/img/g.jpg").write_bytes(b"not a jpeg at all" * 10)
    with open(folder / "data/labels.csv", "a") as csv:
        csv.write("img/e.heic,nv,P4\nimg/f.dcm,nv,P5\nimg/g.jpg,nv,P6\n")
    assert _ingest("clinic") == 0
    _, rejections = _tables(folder)
    by_member = rejections.set_index("member")
    assert by_member.loc["img/e.heic", "reason"] == "unsupported_format"
    assert "HEIC" in by_member.loc["img/e.heic", "message"]
    assert by_member.loc["img/f.dcm", "reason"] == "unsupported_format"
    assert "DICOM" in by_member.loc["img/f.dcm", "message"]
    assert by_member.loc["img/g.jpg", "reason"] == "corrupt_image"
    for member in ("img/e.heic", "img/f.dcm", "img/g.jpg"):
        message = by_member.loc[member, "message"]
        assert member in message and "object at 0x" not in message


def test_class_missing_from_validation_is_reported_and_can_be_required(case, capsys):
    folder = case("class-missing-from-validation")
    assert _ingest("isic") == 0
    assert _split("isic") == 0
    manifest = pd.read_csv(folder / "out/manifest.csv", dtype=str)
    malignant = set(manifest.loc[manifest["label"] == "malignant", "split"])
    assert malignant == {"train", "test"}  # two patients: one to train, one to test
    warnings = json.loads((folder / "out/splits.json").read_text())["warnings"]
    assert len(warnings) == 1 and "'malignant'" in warnings[0] and "validation split" in warnings[0]
    assert "class 'malignant' has no image in the validation split" in capsys.readouterr().err

    config = folder / "config.yaml"
    config.write_text(config.read_text().replace("fractions:", "require_all_classes: true, fractions:"))
    assert _split("isic") == 2
    assert "require_all_classes" in capsys.readouterr().err


def test_training_stops_at_once_when_validation_auc_is_undefined(case, capsys):
    folder = case("class-missing-from-validation")
    assert _ingest("isic") == 0 and _split("isic") == 0
    code = main(["classify", "train", "--config", "config.yaml", "--study", "isic", "--scenario", "baseline",
                 "--architecture", "resnet10t", "--lmdb", "out/lmdb", "--manifest", "out/manifest.csv",
                 "--out", "model", "--device", "cpu", "--threads", "1"])
    captured = capsys.readouterr()
    assert code == 2
    assert "holds only class 'benign'" in captured.err and "monitor" in captured.err
    assert "epoch 1" not in captured.out  # stopped before training, not after the epochs
    assert not (folder / "model/best.pt").exists()


def test_a_users_csv_in_windows_1252_gets_advice_to_save_as_utf8(case, capsys):
    folder = case("unicode-normalisation-names")
    csv = folder / "data/labels.csv"
    csv.write_bytes(csv.read_text(encoding="utf-8").encode("cp1252"))
    assert _ingest("clinic") == 2
    error = capsys.readouterr().err
    assert "labels.csv is not UTF-8: line 2" in error and "Windows-1252" in error and "CSV UTF-8" in error
    assert "re-download" not in error


def test_a_csv_with_a_byte_order_mark_is_read(case):
    folder = case("unicode-normalisation-names")
    csv = folder / "data/labels.csv"
    csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes())  # Excel's "CSV UTF-8" writes one
    assert _ingest("clinic") == 0
    assert len(_tables(folder)[0]) == 3


def _clear_utf8_flag(path: Path) -> None:
    """Rewrite a zip as tools that store UTF-8 names without the UTF-8 flag (bit 11) do."""
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (start := data.find(signature, start)) >= 0:
            flags = int.from_bytes(data[start + offset:start + offset + 2], "little") & ~0x800
            data[start + offset:start + offset + 2] = flags.to_bytes(2, "little")
            start += 4
    path.write_bytes(bytes(data))


def test_zip_names_in_utf8_without_the_utf8_flag_are_matched(case):
    folder = case("unicode-normalisation-names")
    images = folder / "data/img"
    with zipfile.ZipFile(folder / "data/images.zip", "w") as archive:
        for path in images.iterdir():
            archive.writestr(f"img/{unicodedata.normalize('NFC', path.name)}", path.read_bytes())
    _clear_utf8_flag(folder / "data/images.zip")
    with zipfile.ZipFile(folder / "data/images.zip") as archive:
        assert not any(c in n for n in archive.namelist() for c in "éó")  # zipfile reads them as mojibake
    shutil.rmtree(images)
    config = folder / "config.yaml"
    config.write_text(config.read_text().replace("path: data}", "path: data, images: images.zip}"))
    assert _ingest("clinic") == 0
    ingested, rejections = _tables(folder)
    assert len(ingested) == 3 and not set(rejections["reason"]) & {"missing_image", "not_in_metadata"}


def test_file_names_with_windows_1252_bytes_on_disk_are_matched_and_written_readably(case):
    folder = case("unicode-normalisation-names")
    images = folder / "data/img"
    for path in list(images.iterdir()):
        if not path.name.isascii():  # as `unzip` leaves names from a Windows zip: cp1252 bytes
            raw = unicodedata.normalize("NFC", path.name).encode("cp1252")
            path.rename(images / raw.decode("utf-8", "surrogateescape"))
    assert _ingest("clinic") == 0
    ingested, rejections = _tables(folder)
    assert len(ingested) == 3 and not set(rejections["reason"]) & {"missing_image", "not_in_metadata"}
    assert any("\\xe9" in m for m in ingested["member"])  # the stored bytes, shown readably
