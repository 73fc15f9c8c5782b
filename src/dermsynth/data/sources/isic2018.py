"""ISIC 2018 Task 3 (lesion diagnosis): Training (= HAM10000), Validation and Test parts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..records import Record
from .base import (SourceCatalog, assemble, first_existing, one_hot_label, read_metadata_csv, register_reader,
                   row_rejection, stem_key)

CLASS_COLUMNS = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]


@register_reader
class Isic2018Task3Reader:
    """ISIC 2018 Task 3, one part (`spec["part"]`: Training, Validation or Test): one-hot ground truth over 7 classes,
    lesion ids from the part's LesionGroupings.csv when present."""
    type_name = "isic2018_task3"

    def __init__(self, name: str, spec: dict):
        self.name, self.root, self.part = name, Path(spec["path"]), spec["part"]

    def ground_truth_file(self) -> Path:
        """The part's one-hot ground-truth CSV (image, MEL … VASC)."""
        return self.root / f"ISIC2018_Task3_{self.part}_GroundTruth.csv"

    def image_containers(self) -> list[Path]:
        """The part's image zip, or its extracted folder."""
        stem = f"ISIC2018_Task3_{self.part}_Input"
        return [first_existing(self.root / f"{stem}.zip", self.root / stem)]

    def required_files(self) -> list[Path]:
        """The files its ingest job reads (Snakemake's inputs; one missing is said when the workflow is planned)."""
        return [self.ground_truth_file(), *self.image_containers()]

    def _lesion_ids(self) -> dict[str, str]:
        groupings = self.root / f"ISIC2018_Task3_{self.part}_LesionGroupings.csv"
        if not groupings.exists():
            return {}
        frame = pd.read_csv(groupings, dtype=str, keep_default_na=False)
        if not {"image", "lesion_id"} <= set(frame.columns):
            return {}
        return dict(zip(frame["image"].str.strip(), frame["lesion_id"].str.strip()))

    def read(self) -> SourceCatalog:
        """Every image file and metadata row of the archive, once each: a record, or a rejection with its reason.
        Raises InputError for a missing or malformed metadata CSV."""
        gt = self.ground_truth_file()
        layout = f"ISIC 2018 Task 3 {self.part} (ground-truth CSV with image,{','.join(CLASS_COLUMNS)})"
        frame = read_metadata_csv(gt, ["image", *CLASS_COLUMNS], layout)
        lesions = self._lesion_ids()
        records, rejections = [], []
        for index, row in frame.iterrows():
            line, image_id = index + 2, row["image"].strip()
            column, problem = one_hot_label(row, CLASS_COLUMNS)
            if column is None:
                rejections.append(row_rejection(self.name, "unknown_label", f"{gt} row {line}: {problem}; "
                                                "correct the row.", gt, line, image_id, image_id))
                continue
            diagnosis = column.lower()
            records.append(Record(self.name, image_id, image_id, str(gt), line, column, diagnosis,
                                  diagnosis == "mel", lesion_id=lesions.get(image_id, "")))
        return assemble(self.name, records, rejections, self.image_containers(), stem_key)
