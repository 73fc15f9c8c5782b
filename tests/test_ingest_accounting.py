"""Randomised accounting: folders and zips built from seeded random mixtures of good images and every
kind of odd file (names in NFD, `\\` separators, extension case, same stems, formats, documents,
tool files, corrupt bytes, duplicates, escaping paths). After ingest, every file and every metadata
row appears exactly once across ingested.csv and rejections.csv, each file has the outcome its kind
calls for, and each stored image's pixels and label are its own file's (decoded independently)."""

from __future__ import annotations

import io
import unicodedata
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermsynth.config import validate_config
from dermsynth.data.ingest import ingest
from dermsynth.data.options import IngestOptions
from dermsynth.data.lmdb_store import LmdbImageStore

RESOLUTION = 16
LABELS = ["mel", "nv", "bkl", "bcc"]
FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP", "gif": "GIF", "bmp": "BMP", "tif": "TIFF"}
STEMS = ["lésion", "naevus", "Rücken", "case", "épaule", "x", "plain", "ISIC"]


@dataclass
class File:
    name: str                       # as stored (folder path relative to the image root, or zip member)
    data: bytes
    label: str | None = None        # the label of the row that names it
    expect: str = "stored"          # "stored" or a rejection reason; "a|b": either (which copy is first)


@dataclass
class Layout:
    files: list[File] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)       # metadata rows in file order
    row_expect: list[str] = field(default_factory=list)  # per row: as File.expect


def _picture(rng: np.random.Generator, grey: bool = False) -> Image.Image:
    size = (int(rng.integers(18, 40)), int(rng.integers(18, 40)))
    base = rng.integers(30, 225, size=3)
    noise = rng.integers(-25, 26, size=(size[1], size[0], 3))
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    if grey:
        pixels[..., 1] = pixels[..., 2] = pixels[..., 0]
    return Image.fromarray(pixels)


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=FORMATS[fmt], **({"quality": 95} if fmt == "jpg" else {}))
    return buffer.getvalue()


def _spelled(rng, name: str) -> str:
    """A metadata spelling of `name` that must still find it: NFC, extension case, `\\`, `./`."""
    choice = rng.integers(4)
    if choice == 0:
        return unicodedata.normalize("NFC", name)
    if choice == 1:
        stem, _, ext = name.rpartition(".")
        return f"{stem}.{ext.swapcase()}"
    if choice == 2:
        return name.replace("/", "\\")
    return "./" + name


def _folder_layout(rng: np.random.Generator) -> Layout:
    layout, used = Layout(), set()

    def fresh(ext: str, sub: str = "img") -> str:
        while True:
            stem = f"{STEMS[rng.integers(len(STEMS))]} {int(rng.integers(1000))}"
            if stem.casefold() not in used:
                used.add(stem.casefold())
                form = "NFD" if rng.random() < 0.5 else "NFC"
                ext = ext.upper() if rng.random() < 0.3 else ext
                return unicodedata.normalize(form, f"{sub}/{stem}.{ext}")

    def row(path: str, label: str, expect: str) -> None:
        layout.rows.append({"path": path, "label": label, "patient_id": f"P{len(layout.rows)}"})
        layout.row_expect.append(expect)

    def good(ext=None, listed=True, spelling=True) -> File:
        ext = ext or list(FORMATS)[rng.integers(len(FORMATS))]
        f = File(fresh(ext), _encode(_picture(rng), ext), LABELS[rng.integers(len(LABELS))])
        layout.files.append(f)
        if listed:
            row(_spelled(rng, f.name) if spelling else f.name, f.label, "stored")
        else:
            f.label, f.expect = None, "not_in_metadata"
        return f

    kinds = rng.choice(["good", "pair", "pair_ambiguous", "corrupt", "foreign", "unlisted", "missing",
                        "duplicate_row", "duplicate_content", "unknown_label", "grey"],
                       size=int(rng.integers(12, 24)))
    for kind in ["good", *kinds]:
        if kind == "good":
            good()
        elif kind in ("pair", "pair_ambiguous"):  # same stem, two extensions, different pictures
            first = good("png", listed=False)
            second = File(first.name[:-3] + "jpg", _encode(_picture(rng), "jpg"))
            layout.files.append(second)
            if kind == "pair":
                for f in (first, second):
                    f.label, f.expect = LABELS[rng.integers(len(LABELS))], "stored"
                    row(f.name, f.label, "stored")
            else:
                first.expect = second.expect = "ambiguous_member"
                row(first.name[:-4], "nv", "ambiguous_image")
        elif kind == "corrupt":
            f = File(fresh("jpg"), rng.bytes(int(rng.integers(10, 400))), "nv", "corrupt_image")
            layout.files.append(f)
            row(f.name, "nv", "corrupt_image")
        elif kind == "foreign":
            f = File(fresh("heic"), b"\x00\x00\x00\x18ftypheic" + rng.bytes(200), "mel", "unsupported_format")
            layout.files.append(f)
            row(f.name, "mel", "unsupported_format")
        elif kind == "unlisted":
            good(listed=False)
        elif kind == "missing":
            row(f"img/absent {len(layout.rows)}.jpg", "nv", "missing_image")
        elif kind == "duplicate_row":  # the first of two identical rows is used, whichever it is
            f = good(spelling=False)
            row(f.name, f.label, "stored|duplicate_id")
            layout.row_expect[-2] = "stored|duplicate_id"
        elif kind == "duplicate_content":  # the same bytes under two names: the first row's is kept
            f = good("png")
            f.expect = "stored|duplicate_content"
            copy = File(fresh("png"), f.data, LABELS[rng.integers(len(LABELS))], "stored|duplicate_content")
            layout.files.append(copy)
            row(copy.name, copy.label, "stored|duplicate_content")
            layout.row_expect[-2] = "stored|duplicate_content"
        elif kind == "unknown_label":
            f = good()
            f.label, f.expect = None, "unknown_label"
            layout.rows[-1]["label"], layout.row_expect[-1] = "naevus?", "unknown_label"
        elif kind == "grey":
            f = File(fresh("png"), _encode(_picture(rng, grey=True), "png"), "bkl", "grayscale_image")
            layout.files.append(f)
            row(f.name, "bkl", "grayscale_image")
    layout.files += [File("img/notes.txt", b"scanned 2024", expect="not_an_image"),
                     File("img/.DS_Store", rng.bytes(64), expect="archive_tool_file"),
                     File("img/._" + Path(layout.files[0].name).name, rng.bytes(64), expect="archive_tool_file")]
    order = rng.permutation(len(layout.rows))  # rows in random order: nothing may depend on it
    layout.rows = [layout.rows[i] for i in order]
    layout.row_expect = [layout.row_expect[i] for i in order]
    return layout


def _write_folder(root: Path, layout: Layout) -> dict:
    for f in layout.files:
        path = root / "images" / f.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f.data)
    pd.DataFrame(layout.rows, columns=["path", "label", "patient_id"]).to_csv(root / "labels.csv", index=False)
    return {"type": "folder", "path": str(root), "images": "images"}


def _ham_layout(rng: np.random.Generator) -> tuple[Layout, dict[str, list[File]]]:
    """A HAM10000-layout pair of zips: ids are file stems; members in a folder, some with `\\`."""
    layout, zips = Layout(), {"HAM10000_images_part_1.zip": [], "HAM10000_images_part_2.zip": []}
    ids = iter(rng.permutation(np.arange(24306, 34306)))

    def member(image_id: str, ext: str = "jpg") -> str:
        folder = "HAM10000_images_part_1" + ("\\" if rng.random() < 0.5 else "/")
        return f"{folder}{image_id}.{ext.upper() if rng.random() < 0.3 else ext}"

    def row(image_id: str, dx: str, expect: str) -> None:
        layout.rows.append({"lesion_id": f"HAM_{image_id[5:]}", "image_id": image_id, "dx": dx,
                            "dx_type": "histo", "age": "50.0", "sex": "male", "localization": "back"})
        layout.row_expect.append(expect)

    def add(f: File, part: int = 1) -> File:
        layout.files.append(f)
        zips[f"HAM10000_images_part_{part}.zip"].append(f)
        return f

    kinds = rng.choice(["good", "twin_zips", "ambiguous", "corrupt", "unlisted", "missing", "unsafe", "unknown"],
                       size=int(rng.integers(10, 20)))
    for kind in ["good", *kinds]:
        image_id = f"ISIC_00{next(ids)}"
        dx = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"][rng.integers(7)]
        picture = _encode(_picture(rng), "jpg")
        if kind == "good":
            add(File(member(image_id), picture, dx), part=int(rng.integers(1, 3)))
            row(image_id, dx, "stored")
        elif kind == "twin_zips":  # the same file in both zips: one image, one duplicate_member
            add(File(member(image_id), picture, dx, "stored"), 1)
            add(File(member(image_id), picture, None, "duplicate_member"), 2)
            row(image_id, dx, "stored")
        elif kind == "ambiguous":  # two different pictures with the row's id
            add(File(member(image_id), picture, None, "ambiguous_member"), 1)
            add(File(member(image_id, "png"), _encode(_picture(rng), "png"), None, "ambiguous_member"), 2)
            row(image_id, dx, "ambiguous_image")
        elif kind == "corrupt":
            add(File(member(image_id), picture[: len(picture) // 3], dx, "corrupt_image"))
            row(image_id, dx, "corrupt_image")
        elif kind == "unlisted":
            add(File(member(image_id), picture, None, "not_in_metadata"))
        elif kind == "missing":
            row(image_id, dx, "missing_image")
        elif kind == "unsafe":
            add(File(f"..\\{image_id}.jpg", picture, None, "unsafe_member_path"))
            row(image_id, dx, "unsafe_member_path")
        elif kind == "unknown":
            add(File(member(image_id), picture, None, "unknown_label"))
            row(image_id, "melanomaX", "unknown_label")
    add(File("HAM10000_images_part_1\\LICENSE.txt", b"CC BY-NC 4.0", expect="not_an_image"))
    add(File("__MACOSX/HAM10000_images_part_1/._x.jpg", rng.bytes(40), expect="archive_tool_file"), 2)
    return layout, zips


def _write_ham(root: Path, layout: Layout, zips: dict[str, list[File]]) -> dict:
    for name, files in zips.items():
        with zipfile.ZipFile(root / name, "w") as archive:
            for f in files:
                archive.writestr(f.name, f.data)
    pd.DataFrame(layout.rows).to_csv(root / "HAM10000_metadata.csv", index=False)
    return {"type": "ham10000", "path": str(root)}


def _reference(data: bytes) -> np.ndarray:
    """Independent decode: first frame → RGB → centre square → Lanczos to RESOLUTION."""
    with Image.open(io.BytesIO(data)) as image:
        image.seek(0)
        rgb = image.convert("RGB")
    side = min(rgb.size)
    left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
    return np.asarray(rgb.crop((left, top, left + side, top + side)).resize((RESOLUTION, RESOLUTION),
                                                                            Image.Resampling.LANCZOS))


def _ingest(root: Path, source: dict, labels: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    cfg = validate_config({"sources": {"src": source}, "ingest": {"workers": 1, "shards": 2, "jpeg_draft": False},
                           "datasets": {"ds": {"labels": labels, "resolution": RESOLUTION,
                                               "sources": [{"source": "src"}], "split": {"group_by": "image"}}}})
    out = root / "out"
    ingest(IngestOptions.from_config(cfg, dataset="ds"), out)
    read = lambda name: pd.read_csv(out / name, dtype=str, keep_default_na=False)  # noqa: E731
    return read("ingested.csv"), read("rejections.csv")


def _check(layout: Layout, ingested: pd.DataFrame, rejections: pd.DataFrame, store: LmdbImageStore,
           container_of) -> None:
    outcome = pd.concat([ingested.assign(reason="stored")[["archive", "member", "row", "reason", "key"]],
                         rejections[["archive", "member", "row", "reason", "key"]]])
    # every file exactly once
    files = outcome[outcome["member"] != ""]
    assert files[["archive", "member"]].duplicated().sum() == 0
    expected_files = {(container_of(f), f.name): f for f in layout.files}
    assert set(zip(files["archive"], files["member"])) == set(expected_files)
    # every metadata row exactly once, with the outcome its kind calls for
    rows = outcome[outcome["row"] != ""]
    assert sorted(rows["row"].astype(int)) == list(range(2, 2 + len(layout.rows)))
    by_row = dict(zip(rows["row"].astype(int), rows["reason"]))
    for line, expect in enumerate(layout.row_expect, start=2):
        assert by_row[line] in expect.split("|"), (line, layout.rows[line - 2], by_row[line])
    for either in ("stored|duplicate_id", "stored|duplicate_content"):  # exactly one of each pair is kept
        pair = [by_row[line] for line, e in enumerate(layout.row_expect, start=2) if e == either]
        assert pair.count("stored") == len(pair) // 2
    # every file: its outcome; stored files hold their own pixels and label
    for (archive, member), reason, key in zip(zip(files["archive"], files["member"]), files["reason"], files["key"]):
        f = expected_files[(archive, member)]
        assert reason in f.expect.split("|"), (member, reason, f.expect)
        if reason == "stored":
            label = ingested.set_index("key").loc[key, "raw_label"]
            assert label == f.label, (member, label, f.label)
            assert np.array_equal(store.get(key), _reference(f.data)), member  # full decode: exact
    for message in rejections["message"]:
        assert "object at 0x" not in message and len(message) > 30


@pytest.mark.parametrize("seed", range(40))
def test_random_folder_every_file_and_row_accounted_for(tmp_path, seed):
    layout = _folder_layout(np.random.default_rng(seed))
    source = _write_folder(tmp_path, layout)
    ingested, rejections = _ingest(tmp_path, source, "ham7")
    store = LmdbImageStore(tmp_path / "out/lmdb")
    _check(layout, ingested, rejections, store, lambda f: str(tmp_path / "images"))
    store.close()


@pytest.mark.parametrize("seed", range(40))
def test_random_zips_every_file_and_row_accounted_for(tmp_path, seed):
    layout, zips = _ham_layout(np.random.default_rng(100 + seed))
    source = _write_ham(tmp_path, layout, zips)
    where = {id(f): str(tmp_path / name) for name, files in zips.items() for f in files}
    ingested, rejections = _ingest(tmp_path, source, "ham7")
    store = LmdbImageStore(tmp_path / "out/lmdb")
    _check(layout, ingested, rejections, store, lambda f: where[id(f)])
    store.close()
