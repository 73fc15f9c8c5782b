"""ISIC 2019 training set: one-hot ground truth, metadata, and the image zip."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..records import Record
from .base import (SourceCatalog, assemble, first_existing, isic_key, one_hot_label, read_metadata_csv,
                   register_reader, row_rejection)

CLASS_COLUMNS = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
COLUMN_TO_DIAGNOSIS = {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AK": "akiec", "BKL": "bkl", "DF": "df",
                       "VASC": "vasc", "SCC": "scc", "UNK": None}


@register_reader
class Isic2019Reader:
    """ISIC 2019 training set: one-hot ground truth over 9 columns (UNK has no diagnosis), metadata with lesion ids;
    `_downsampled` names match their image by `isic_key`."""
    type_name = "isic2019"

    def __init__(self, name: str, spec: dict):
        self.name, self.root = name, Path(spec["path"])

    def ground_truth_file(self) -> Path:
        """ISIC_2019_Training_GroundTruth.csv (image, MEL … UNK)."""
        return self.root / "ISIC_2019_Training_GroundTruth.csv"

    def metadata_file(self) -> Path:
        """ISIC_2019_Training_Metadata.csv (image, age_approx, anatom_site_general, lesion_id, sex)."""
        return self.root / "ISIC_2019_Training_Metadata.csv"

    def image_containers(self) -> list[Path]:
        """The image zip, or its extracted folder."""
        return [first_existing(self.root / "ISIC_2019_Training_Input.zip", self.root / "ISIC_2019_Training_Input")]

    def required_files(self) -> list[Path]:
        """The files its ingest job reads (Snakemake's inputs; one missing is said when the workflow is planned)."""
        return [self.ground_truth_file(), self.metadata_file(), *self.image_containers()]

    def _metadata(self) -> dict[str, pd.Series]:
        frame = read_metadata_csv(self.metadata_file(), ["image", "lesion_id"], "ISIC 2019 metadata")
        return {isic_key(name): row for name, (_, row) in zip(frame["image"].str.strip(), frame.iterrows())}

    def read(self) -> SourceCatalog:
        """Every image file and metadata row of the archive, once each: a record, or a rejection with its reason.
        Raises InputError for a missing or malformed metadata CSV."""
        gt = self.ground_truth_file()
        frame = read_metadata_csv(gt, ["image", *CLASS_COLUMNS], "ISIC 2019 ground truth")
        metadata = self._metadata()
        records, rejections = [], []
        for index, row in frame.iterrows():
            line, image_id = index + 2, row["image"].strip()
            key = isic_key(image_id)
            column, problem = one_hot_label(row, CLASS_COLUMNS)
            if column is None:
                rejections.append(row_rejection(self.name, "unknown_label", f"{gt} row {line}: {problem}; "
                                                "correct the row.", gt, line, image_id, key))
                continue
            meta = metadata.get(key)
            attributes = ({k: meta[k] for k in ("age_approx", "anatom_site_general", "sex") if k in meta}
                          if meta is not None else {})
            diagnosis = COLUMN_TO_DIAGNOSIS[column]
            records.append(Record(self.name, key, image_id, str(gt), line, column, diagnosis,
                                  None if diagnosis is None else diagnosis == "mel",
                                  lesion_id=meta["lesion_id"].strip() if meta is not None else "",
                                  attributes=attributes))
        return assemble(self.name, records, rejections, self.image_containers(), isic_key)
