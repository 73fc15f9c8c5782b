"""What readers produce: one Record per listed image, one Rejection per image that is not used."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .names import printable

# How spreadsheets, R, pandas, SAS and people write "no value": an id spelled like this is missing, never an
# identity (two images with patient_id "NA" are not one patient). Compared case-insensitively, stripped.
MISSING_SPELLINGS = frozenset({"", "na", "n/a", "n.a.", "#n/a", "#na", "<na>", "nan", "-nan", "null", "none", "nil",
                               "-", "--", "?", ".", "missing"})


def is_missing(value) -> bool:
    """True when `value` means "no value": None, a float NaN, or a spelling in `MISSING_SPELLINGS` (any case,
    surrounding whitespace ignored)."""
    if value is None:
        return True
    if isinstance(value, float):
        return value != value
    return str(value).strip().casefold() in MISSING_SPELLINGS


def clean_id(value) -> str:
    """An identifier (patient_id, lesion_id …) stripped of surrounding whitespace, or '' when it is missing
    (see `is_missing`). Every reader's ids and the split's grouping go through this one function."""
    return "" if is_missing(value) else str(value).strip()


@dataclass
class Member:
    """An image file inside a container (a zip archive or a folder)."""

    container: str  # path of the zip file or folder
    name: str       # path inside it exactly as stored (read with this; may hold '\\' or NFD accents)
    meant: str = "" # the name its writer meant, when the zip stored UTF-8 without saying so

    @property
    def spelled(self) -> str:
        """The name as its writer meant it (`meant` when the zip misstated its encoding, else the stored `name`)."""
        return self.meant or self.name

    def key(self) -> tuple[str, str]:
        """(container, stored name): what identifies the member's bytes."""
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

    def __post_init__(self) -> None:
        self.patient_id, self.lesion_id = clean_id(self.patient_id), clean_id(self.lesion_id)


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
