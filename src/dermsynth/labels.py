"""Harmonised diagnoses and the label schemes datasets are built with.

Every reader maps its archive's own label vocabulary to one harmonised diagnosis code
(`DIAGNOSES`) and a melanoma flag. A dataset's scheme then turns those into class names:

* ``ham7``   — the 7 HAM10000 / ISIC 2018 Task 3 classes, in the ground-truth CSV's column order.
* ``binary`` — benign vs malignant, where malignant means melanoma, as ISIC 2020's ``target``.
"""

from __future__ import annotations

DIAGNOSES = ("mel", "nv", "bcc", "akiec", "bkl", "df", "vasc", "scc")

SCHEMES: dict[str, tuple[str, ...]] = {
    "ham7": ("mel", "nv", "bcc", "akiec", "bkl", "df", "vasc"),
    "binary": ("benign", "malignant"),
}

DIAGNOSIS_NAMES = {
    "mel": "melanoma", "nv": "melanocytic nevus", "bcc": "basal cell carcinoma",
    "akiec": "actinic keratosis / intraepithelial carcinoma (Bowen's disease)",
    "bkl": "benign keratosis-like lesion", "df": "dermatofibroma", "vasc": "vascular lesion",
    "scc": "squamous cell carcinoma",
}


def scheme_classes(scheme: str) -> tuple[str, ...]:
    """The class names of label scheme `scheme` (`ham7` or `binary`), in class-index order. Raises KeyError for
    another scheme."""
    return SCHEMES[scheme]


def class_for(scheme: str, diagnosis: str | None, melanoma: bool | None) -> tuple[str | None, str]:
    """The class of an image under `scheme`, or (None, reason) when it has none."""
    if scheme == "ham7":
        if diagnosis in SCHEMES["ham7"]:
            return diagnosis, ""
        if diagnosis is None:
            return None, "diagnosis is unknown, so it has no 7-class HAM10000 label"
        return None, f"diagnosis '{diagnosis}' has no counterpart among the 7 HAM10000 classes"
    if scheme == "binary":
        if melanoma is None:
            return None, "benign/malignant status is unknown"
        return ("malignant" if melanoma else "benign"), ""
    raise ValueError(f"unknown label scheme {scheme!r}")
