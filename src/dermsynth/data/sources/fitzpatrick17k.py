"""Fitzpatrick17k: fitzpatrick17k.csv (md5hash, label, …) and the images, saved as <md5hash>.jpg.

The release lists image URLs; users download them into a folder (or zip) once. Only skin-lesion
labels have a harmonised diagnosis; the many other conditions are reported as excluded (the
HAM10000 study kept 368 lesion-domain images).
"""

from __future__ import annotations

from pathlib import Path

from ..records import Record
from .base import SourceCatalog, assemble, read_metadata_csv, register_reader, row_rejection, stem_key

LAYOUT_IMAGES = "images"
"""The folder (or .zip) of the downloaded <md5hash>.jpg files, relative to the source's path, where
`sources.<name>.images` is not given: this layout's own name, not a schema default (the schema's `source` entry is
shared by every archive type, and a folder source's `images` defaults to its path itself, `folder.LAYOUT_IMAGES`)."""

DEFAULT_LABEL_MAP = {
    "melanoma": "mel", "malignant melanoma": "mel", "superficial spreading melanoma ssm": "mel",
    "lentigo maligna": "mel", "nevocytic nevus": "nv", "congenital nevus": "nv", "halo nevus": "nv",
    "basal cell carcinoma": "bcc", "basal cell carcinoma morpheiform": "bcc",
    "solid cystic basal cell carcinoma": "bcc", "actinic keratosis": "akiec",
    "seborrheic keratosis": "bkl", "dermatofibroma": "df", "pyogenic granuloma": "vasc",
    "squamous cell carcinoma": "scc",
}


@register_reader
class Fitzpatrick17kReader:
    """Fitzpatrick17k (Groh et al. 2021): skin-lesion labels map to a diagnosis (`DEFAULT_LABEL_MAP`, extended by
    `label_map`); other conditions are rejected as `excluded_label`."""
    type_name = "fitzpatrick17k"

    def __init__(self, name: str, spec: dict):
        self.name, self.root = name, Path(spec["path"])
        self.images = self.root / spec.get("images", LAYOUT_IMAGES)
        self.label_map = {**DEFAULT_LABEL_MAP, **{k.lower(): v for k, v in spec.get("label_map", {}).items()}}

    def required_files(self) -> list[Path]:
        """The files its ingest job reads (Snakemake's inputs; one missing is said when the workflow is planned)."""
        return [self.root / "fitzpatrick17k.csv", self.images]

    def read(self) -> SourceCatalog:
        """Every image file and metadata row of the archive, once each: a record, or a rejection with its reason.
        Raises InputError for a missing or malformed metadata CSV."""
        meta = self.root / "fitzpatrick17k.csv"
        frame = read_metadata_csv(meta, ["md5hash", "label"], "Fitzpatrick17k (fitzpatrick17k.csv)")
        records, rejections = [], []
        for index, row in frame.iterrows():
            line, image_id, label = index + 2, row["md5hash"].strip(), row["label"].strip()
            mapped = self.label_map.get(label.lower())
            if mapped is None:
                rejections.append(row_rejection(
                    self.name, "excluded_label", f"{meta} row {line}: '{label}' is not a skin-lesion label "
                    f"of the harmonised scheme; add it to sources.{self.name}.label_map to use it.",
                    meta, line, image_id, image_id))
                continue
            melanoma = mapped == "mel" if mapped not in ("benign", "malignant") else mapped == "malignant"
            diagnosis = mapped if mapped not in ("benign", "malignant") else None
            attributes = {k: row[k] for k in ("fitzpatrick_scale", "three_partition_label") if k in row}
            records.append(Record(self.name, image_id, image_id, str(meta), line, label, diagnosis, melanoma,
                                  attributes=attributes))
        return assemble(self.name, records, rejections, [self.images], stem_key)
