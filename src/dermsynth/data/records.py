"""What readers produce: one Record per listed image, one Rejection per image that is not used."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .names import printable


@dataclass
class Member:
    """An image file inside a container (a zip archive or a folder)."""

    container: str  # path of the zip file or folder
    name: str       # path inside it exactly as stored (read with this; may hold '\\' or NFD accents)
    meant: str = "" # the name its writer meant, when the zip stored UTF-8 without saying so

    @property
    def spelled(self) -> str:
        return self.meant or self.name

    def key(self) -> tuple[str, str]:
        return self.container, self.name


@dataclass
class Record:
    """One image listed in a source's metadata, with its harmonised label."""

    source: str
    key: str                    # dataset-wide identifier (ISIC id for ISIC/HAM archives)
    image_id: str               # the id exactly as written in the metadata
    metadata_file: str
    row: int                    # line number in the metadata file (header = line 1)
    raw_label: str
    diagnosis: str | None       # harmonised code from labels.DIAGNOSES, None when unknown
    melanoma: bool | None
    patient_id: str = ""
    lesion_id: str = ""
    member: Member | None = None
    attributes: dict = field(default_factory=dict)  # age, sex, site … kept for analysis


@dataclass
class Rejection:
    """An input image that is not in the manifest, and why (a code and a sentence with the fix)."""

    source: str
    reason: str                 # short code, e.g. corrupt_image, missing_image, unknown_label
    message: str
    key: str = ""
    image_id: str = ""
    metadata_file: str = ""
    row: int | None = None
    archive: str = ""
    member: str = ""

    def as_row(self) -> dict:
        """The CSV row; names that hold non-UTF-8 bytes are written with `\\x..` escapes."""
        return {k: printable(v) if isinstance(v, str) else v for k, v in dataclasses.asdict(self).items()}


REJECTION_COLUMNS = [f.name for f in dataclasses.fields(Rejection)]
