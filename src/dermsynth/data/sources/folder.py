"""A hospital's own images: a folder (or zip) of images and a CSV with path,label[,patient_id[,lesion_id]]."""

from __future__ import annotations

from collections import Counter
from pathlib import Path, PurePosixPath

from ...labels import DIAGNOSES
from ..containers import is_unsafe
from ..names import canonical_name
from ..records import Record, Rejection, is_missing
from .base import SourceCatalog, assemble, read_metadata_csv, register_reader, row_rejection

# The layout's own names, used where `sources.<name>.csv` / `.images` are not given. They are this reader's, not
# schema defaults: the schema's `source` entry is shared by every archive type, most of which have no such key,
# and `images` means another folder in each layout ('.' here, 'images' for Fitzpatrick17k); the schema's
# descriptions name them.
LAYOUT_CSV = "labels.csv"
"""The metadata CSV (path,label[,patient_id[,lesion_id]]), relative to the source's path."""
LAYOUT_IMAGES = "."
"""The folder (or .zip) the CSV's paths are relative to, relative to the source's path: the path itself."""


@register_reader
class FolderReader:
    """A folder (or zip) of images with a UTF-8 CSV `path,label[,patient_id[,lesion_id]]`; paths relative
    to `images`."""
    type_name = "folder"

    def __init__(self, name: str, spec: dict):
        self.name, self.root = name, Path(spec["path"])
        self.csv = self.root / spec.get("csv", LAYOUT_CSV)
        self.images = self.root / spec.get("images", LAYOUT_IMAGES)
        self.label_map = spec.get("label_map", {})

    def required_files(self) -> list[Path]:
        """The files its ingest job reads (Snakemake's inputs; one missing is said when the workflow is planned)."""
        return [self.csv, self.images]

    def _key(self, member: str) -> str:
        """`<source>/<path without extension>`, the path in canonical spelling (see names.canonical_name)."""
        path = PurePosixPath(canonical_name(member))
        return f"{self.name}/{path.with_suffix('') if path.suffix else path}"

    def _unique_keys(self, records: list[Record]) -> None:
        """Rows whose paths differ only in the extension (`case17.png`, `case17.jpg`) are different
        files: they keep the extension in their keys, so neither can take the other's place."""
        stems = Counter(r.key.casefold() for r in records)
        for record in records:
            if stems[record.key.casefold()] > 1:
                record.key = f"{self.name}/{canonical_name(record.image_id)}"

    def _harmonise(self, label: str) -> tuple[str | None, bool | None] | None:
        mapped = self.label_map.get(label, label.lower())
        if mapped in DIAGNOSES:
            return mapped, mapped == "mel"
        if mapped in ("benign", "malignant"):
            return None, mapped == "malignant"
        return None

    def read(self) -> SourceCatalog:
        """Every image file and metadata row of the archive, once each: a record, or a rejection with its reason.
        Raises InputError for a missing or malformed metadata CSV."""
        frame = read_metadata_csv(self.csv, ["path", "label"], "image folder + CSV (path,label[,patient_id])",
                                  own_file=True)
        records: list[Record] = []
        rejections: list[Rejection] = []
        allowed = ", ".join([*DIAGNOSES, "benign", "malignant"])
        for index, row in frame.iterrows():
            line, path, label = index + 2, canonical_name(row["path"]), row["label"].strip()
            key = self._key(path)
            if is_missing(row["path"]):
                rejections.append(row_rejection(self.name, "missing_path", f"{self.csv} row {line}: the path is "
                                                f"missing ('{row['path']}'); write the image's path relative to "
                                                f"{self.images}, or drop the row.", self.csv, line, "", ""))
                continue
            if is_unsafe(path):
                rejections.append(row_rejection(self.name, "unsafe_member_path",
                                                f"{self.csv} row {line}: path '{path}' escapes {self.images}; "
                                                "use a path relative to it.", self.csv, line, path, key))
                continue
            unlabelled = is_missing(label) and label not in self.label_map
            harmonised = None if unlabelled else self._harmonise(label)
            if unlabelled:
                rejections.append(row_rejection(
                    self.name, "missing_label", f"{self.csv} row {line}: the label is missing ('{label}'); write "
                    f"one of {allowed}, or drop the row.", self.csv, line, path, key))
                continue
            if harmonised is None:
                rejections.append(row_rejection(
                    self.name, "unknown_label", f"{self.csv} row {line}: label '{label}' is unknown; use one of "
                    f"{allowed} or map it in sources.{self.name}.label_map.", self.csv, line, path, key))
                continue
            records.append(Record(self.name, key, path, str(self.csv), line, label, *harmonised,
                                  patient_id=row.get("patient_id", "").strip(),
                                  lesion_id=row.get("lesion_id", "").strip()))
        self._unique_keys(records)
        return assemble(self.name, records, rejections, [self.images], self._key, ids_are_paths=True)
