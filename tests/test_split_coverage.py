"""Splits give every split each class while the groups allow it, and say so when they cannot."""

from __future__ import annotations

import pandas as pd
import pytest

from dermsynth.data.splits import split_dataset
from dermsynth.errors import InputError


def _ingested(groups: dict[str, int], rare: str = "malignant", rare_groups: int = 3) -> pd.DataFrame:
    """Patients with `groups[label]` single-class patients each holding 1–4 images."""
    rows = []
    for label, count in {**groups, rare: rare_groups}.items():
        for g in range(count):
            for i in range(1 + g % 4):
                rows.append({"key": f"{label}-{g}-{i}", "label": label, "patient_id": f"{label}{g}",
                             "lesion_id": "", "split_rule": "auto"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", range(5))
def test_a_class_with_as_many_groups_as_splits_reaches_every_split(seed):
    cfg = {"group_by": "patient", "fractions": {"train": 0.7, "validation": 0.1, "test": 0.2}, "seed": seed}
    frame = split_dataset(_ingested({"benign": 60}), cfg)
    rare = frame[frame["label"] == "malignant"]
    assert set(rare["split"]) == {"train", "validation", "test"}
    assert frame.groupby("group")["split"].nunique().max() == 1
    assert frame.attrs["warnings"] == []


def test_too_few_groups_warn_and_can_be_refused(capsys):
    cfg = {"group_by": "patient", "fractions": {"train": 0.7, "validation": 0.1, "test": 0.2}, "seed": 0}
    frame = split_dataset(_ingested({"benign": 30}, rare_groups=2), cfg)
    assert set(frame.loc[frame["label"] == "malignant", "split"]) == {"train", "test"}
    [warning] = frame.attrs["warnings"]
    assert "class 'malignant' has no image in the validation split" in warning and "2 patient group(s)" in warning
    assert warning in capsys.readouterr().err
    with pytest.raises(InputError, match="require_all_classes"):
        split_dataset(_ingested({"benign": 30}, rare_groups=2), {**cfg, "require_all_classes": True})


def test_forced_splits_count_as_covered_and_are_checked():
    frame = _ingested({"benign": 20}, rare_groups=1)
    test = pd.DataFrame([{"key": f"t{i}", "label": label, "patient_id": f"t{i}", "lesion_id": "", "split_rule": "test"}
                         for i, label in enumerate(["benign", "benign"])])
    cfg = {"group_by": "patient", "fractions": {"train": 0.9, "validation": 0.1}, "seed": 0}
    out = split_dataset(pd.concat([frame, test], ignore_index=True), cfg)
    messages = out.attrs["warnings"]
    # the one malignant patient goes to train; validation and the forced test split lack the class
    assert any("validation split" in m for m in messages) and any("test split" in m for m in messages)
    assert set(out.loc[out["label"] == "malignant", "split"]) == {"train"}
