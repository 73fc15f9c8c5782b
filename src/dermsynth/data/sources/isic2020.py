"""ISIC 2020 training set: ground truth v2, the JPEG zip (train/ISIC_*.jpg), official duplicates."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..records import Record, Rejection
from .base import SourceCatalog, assemble, first_existing, read_metadata_csv, register_reader, row_rejection, stem_key

# ISIC 2020 `diagnosis` values → harmonised diagnosis (None: no counterpart in the 7 classes).
DIAGNOSIS_MAP = {
    "melanoma": "mel", "nevus": "nv", "seborrheic keratosis": "bkl", "lentigo nos": "bkl",
    "lichenoid keratosis": "bkl", "solar lentigo": "bkl", "cafe-au-lait macule": None,
    "atypical melanocytic proliferation": None, "unknown": None,
}
LAYOUT = "ISIC 2020 (ISIC_2020_Training_GroundTruth_v2.csv + ISIC_2020_Training_JPEG.zip)"


@register_reader
class Isic2020Reader:
    """ISIC 2020 training set: benign/malignant with patient and lesion ids; the second image of each official
    duplicate pair is rejected."""
    type_name = "isic2020"

    def __init__(self, name: str, spec: dict):
        self.name, self.root = name, Path(spec["path"])

    def ground_truth_file(self) -> Path:
        """The ground-truth CSV (v2, else the first release)."""
        return first_existing(self.root / "ISIC_2020_Training_GroundTruth_v2.csv",
                              self.root / "ISIC_2020_Training_GroundTruth.csv")

    def duplicates_file(self) -> Path:
        """ISIC_2020_Training_Duplicates.csv (image_name_1, image_name_2); optional."""
        return self.root / "ISIC_2020_Training_Duplicates.csv"

    def image_containers(self) -> list[Path]:
        """The JPEG zip, or the extracted `train/` folder."""
        return [first_existing(self.root / "ISIC_2020_Training_JPEG.zip", self.root / "train")]

    def required_files(self) -> list[Path]:
        """The files its ingest job reads (Snakemake's inputs; one missing is said when the workflow is planned)."""
        return [self.ground_truth_file(), *self.image_containers()]

    def _parse_row(self, gt: Path, line: int, row: pd.Series) -> Record | Rejection:
        image_id = row["image_name"].strip()
        verdict, target = row["benign_malignant"].strip().lower(), row["target"].strip()
        diagnosis_text = row["diagnosis"].strip().lower()
        if verdict not in ("benign", "malignant") or target not in ("0", "1"):
            return row_rejection(self.name, "unknown_label",
                                 f"{gt} row {line}: benign_malignant '{row['benign_malignant']}' / target "
                                 f"'{row['target']}' must be benign|malignant / 0|1; correct the row.",
                                 gt, line, image_id, image_id)
        if (verdict == "malignant") != (target == "1"):
            return row_rejection(self.name, "inconsistent_label",
                                 f"{gt} row {line}: benign_malignant '{verdict}' contradicts target {target}; "
                                 "correct one of them.", gt, line, image_id, image_id)
        if diagnosis_text not in DIAGNOSIS_MAP:
            return row_rejection(self.name, "unknown_label",
                                 f"{gt} row {line}: diagnosis '{row['diagnosis']}' is not an ISIC 2020 "
                                 f"diagnosis ({', '.join(DIAGNOSIS_MAP)}); correct the value.",
                                 gt, line, image_id, image_id)
        attributes = {k: row[k] for k in ("sex", "age_approx", "anatom_site_general_challenge") if k in row}
        return Record(self.name, image_id, image_id, str(gt), line, f"{row['diagnosis']}/{verdict}",
                      DIAGNOSIS_MAP[diagnosis_text], target == "1",
                      patient_id=row["patient_id"].strip(), lesion_id=row.get("lesion_id", "").strip(),
                      attributes=attributes)

    def _official_duplicates(self, records: list[Record]) -> tuple[list[Record], list[Rejection]]:
        """Keep the first image of each pair in ISIC_2020_Training_Duplicates.csv."""
        path = self.duplicates_file()
        if not path.exists():
            return records, []
        pairs = read_metadata_csv(path, ["image_name_1", "image_name_2"], "ISIC 2020 duplicates list")
        present = {r.key: r for r in records}
        dropped: dict[str, Rejection] = {}
        for index, pair in pairs.iterrows():
            first, second = pair["image_name_1"].strip(), pair["image_name_2"].strip()
            if first in present and second in present and first not in dropped and second not in dropped:
                rec = present[second]
                dropped[second] = Rejection(
                    self.name, "official_duplicate",
                    f"{path} row {index + 2} pairs {second} with {first}; {first} is kept so that one "
                    "lesion image cannot straddle train and test.",
                    key=second, image_id=second, metadata_file=rec.metadata_file, row=rec.row)
        return [r for r in records if r.key not in dropped], list(dropped.values())

    def read(self) -> SourceCatalog:
        """Every image file and metadata row of the archive, once each: a record, or a rejection with its reason.
        Raises InputError for a missing or malformed metadata CSV."""
        gt = self.ground_truth_file()
        frame = read_metadata_csv(gt, ["image_name", "patient_id", "diagnosis", "benign_malignant", "target"],
                                  LAYOUT)
        records, rejections = [], []
        for index, row in frame.iterrows():
            parsed = self._parse_row(gt, index + 2, row)
            (records if isinstance(parsed, Record) else rejections).append(parsed)
        records, duplicate_rejections = self._official_duplicates(records)
        return assemble(self.name, records, rejections + duplicate_rejections,
                        self.image_containers(), stem_key)
