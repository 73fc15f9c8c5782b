"""Derm7pt (seven-point checklist): meta/meta.csv with one clinical and one dermoscopic image per case."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from ..names import canonical_name
from ..records import Record, Rejection
from .base import (SourceCatalog, assemble, first_existing, read_metadata_csv, register_reader,
                   row_rejection)

DIAGNOSIS_MAP = {
    "basal cell carcinoma": "bcc", "blue nevus": "nv", "clark nevus": "nv", "combined nevus": "nv",
    "congenital nevus": "nv", "dermal nevus": "nv", "recurrent nevus": "nv", "reed or spitz nevus": "nv",
    "melanoma": "mel", "melanoma (in situ)": "mel", "melanoma (less than 0.76 mm)": "mel",
    "melanoma (0.76 to 1.5 mm)": "mel", "melanoma (more than 1.5 mm)": "mel", "melanoma metastasis": "mel",
    "dermatofibroma": "df", "lentigo": "bkl", "melanosis": "bkl", "seborrheic keratosis": "bkl",
    "vascular lesion": "vasc", "miscellaneous": None,
}


def _member_key(name: str) -> str:
    return str(PurePosixPath(canonical_name(name)).with_suffix("")).lower()


@register_reader
class Derm7ptReader:
    """Derm7pt: one dermoscopic image per case is used; the clinical photograph is listed as not_dermoscopic."""
    type_name = "derm7pt"

    def __init__(self, name: str, spec: dict):
        self.name, self.root = name, Path(spec["path"])

    def image_container(self) -> Path:
        """The images folder, or images.zip."""
        return first_existing(self.root / "images", self.root / "images.zip")

    def required_files(self) -> list[Path]:
        """The files its ingest job reads (Snakemake's inputs; one missing is said when the workflow is planned)."""
        return [self.root / "meta" / "meta.csv", self.image_container()]

    def read(self) -> SourceCatalog:
        """Every image file and metadata row of the archive, once each: a record, or a rejection with its reason.
        Raises InputError for a missing or malformed metadata CSV."""
        meta = self.root / "meta" / "meta.csv"
        frame = read_metadata_csv(meta, ["case_num", "diagnosis", "derm"], "Derm7pt (meta/meta.csv)")
        records, rejections = [], []
        for index, row in frame.iterrows():
            line, derm = index + 2, row["derm"].strip()
            key, diagnosis_text = _member_key(derm), row["diagnosis"].strip().lower()
            if diagnosis_text not in DIAGNOSIS_MAP:
                rejections.append(row_rejection(self.name, "unknown_label",
                                                f"{meta} row {line}: diagnosis '{row['diagnosis']}' is not a Derm7pt "
                                                "diagnosis; correct the value.", meta, line, derm, key))
            else:
                diagnosis = DIAGNOSIS_MAP[diagnosis_text]
                records.append(Record(self.name, key, derm, str(meta), line, row["diagnosis"], diagnosis,
                                      None if diagnosis is None else diagnosis == "mel",
                                      patient_id=f"case{row['case_num'].strip()}"))
            clinic = row.get("clinic", "").strip()
            if clinic:  # listed, but a clinical photograph: accounted for as excluded
                rejections.append(Rejection(self.name, "not_dermoscopic",
                                            f"{meta} row {line}: '{clinic}' is the case's clinical (non-dermoscopic) "
                                            "photograph; only dermoscopic images are used.",
                                            key=_member_key(clinic), image_id=clinic, metadata_file=str(meta), row=line))
        return assemble(self.name, records, rejections, [self.image_container()], _member_key, ids_are_paths=True)
