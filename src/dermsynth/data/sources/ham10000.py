"""HAM10000 as published on Harvard Dataverse: HAM10000_metadata.csv + two image zips."""

from __future__ import annotations

from pathlib import Path

from ..records import Record
from .base import SourceCatalog, assemble, first_existing, read_metadata_csv, register_reader, row_rejection, stem_key

DX_CODES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
LAYOUT = "HAM10000 (HAM10000_metadata.csv, HAM10000_images_part_1.zip, HAM10000_images_part_2.zip)"


@register_reader
class Ham10000Reader:
    """HAM10000 (Tschandl et al. 2018): one image per metadata row, 7 diagnoses (`dx`), lesion ids for grouping."""
    type_name = "ham10000"

    def __init__(self, name: str, spec: dict):
        self.name, self.root = name, Path(spec["path"])

    def metadata_file(self) -> Path:
        """HAM10000_metadata.csv (lesion_id, image_id, dx, dx_type, age, sex, localization)."""
        return self.root / "HAM10000_metadata.csv"

    def image_containers(self) -> list[Path]:
        """The two image parts, each a zip or its extracted folder."""
        return [first_existing(self.root / f"HAM10000_images_part_{i}.zip",
                               self.root / f"HAM10000_images_part_{i}") for i in (1, 2)]

    def required_files(self) -> list[Path]:
        """The files its ingest job reads (Snakemake's inputs; one missing is said when the workflow is planned)."""
        return [self.metadata_file(), *self.image_containers()]

    def read(self) -> SourceCatalog:
        """Every image file and metadata row of the archive, once each: a record, or a rejection with its reason.
        Raises InputError for a missing or malformed metadata CSV."""
        meta = self.metadata_file()
        frame = read_metadata_csv(meta, ["lesion_id", "image_id", "dx"], LAYOUT)
        records, rejections = [], []
        for index, row in frame.iterrows():
            line, image_id = index + 2, row["image_id"].strip()
            dx = row["dx"].strip().lower()
            if not image_id:
                rejections.append(row_rejection(self.name, "missing_id", f"{meta} row {line}: image_id is empty; "
                                                "fill it in or drop the row.", meta, line, "", ""))
                continue
            if dx not in DX_CODES:
                rejections.append(row_rejection(
                    self.name, "unknown_label", f"{meta} row {line}: dx '{row['dx']}' is not a HAM10000 "
                    f"diagnosis ({', '.join(DX_CODES)}); correct the value.", meta, line, image_id, image_id))
                continue
            attributes = {k: row[k] for k in ("dx_type", "age", "sex", "localization", "dataset") if k in row}
            records.append(Record(self.name, image_id, image_id, str(meta), line, dx, dx, dx == "mel",
                                  lesion_id=row["lesion_id"].strip(), attributes=attributes))
        return assemble(self.name, records, rejections, self.image_containers(), stem_key)
