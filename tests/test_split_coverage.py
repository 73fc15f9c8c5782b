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


def test_cover_classes_serves_the_biggest_share_first_with_the_smallest_group():
    from collections import Counter

    import numpy as np

    from dermsynth.data.splits import cover_classes
    groups = {"m1": Counter(mel=1), "m2": Counter(mel=3), "m3": Counter(mel=2), "m4": Counter(mel=4),
              **{f"n{i}": Counter(nv=1 + i % 3) for i in range(12)}}
    totals = {"mel": 10, "nv": 24}
    targets = {b: {c: f * n for c, n in totals.items()} for b, f in (("train", 0.7), ("validation", 0.1),
                                                                      ("test", 0.2))}
    placed = cover_classes(groups, targets, {}, np.random.default_rng(0))
    mel = {g: b for g, b in placed.items() if g.startswith("m")}
    assert mel == {"m1": "train", "m3": "test", "m2": "validation"}  # sizes 1, 2, 3 by share 0.7, 0.2, 0.1
    nv = sorted(b for g, b in placed.items() if g.startswith("n"))
    assert nv == ["test", "train", "validation"]  # one nv group per split, nothing more
    assert all(sum(groups[g].values()) == 1 for g, b in placed.items() if g.startswith("n"))  # the smallest

    forced = cover_classes(groups, targets, {"test": {"mel"}}, np.random.default_rng(0))
    assert {g: b for g, b in forced.items() if g.startswith("m")} == {"m1": "train", "m3": "validation"}


def test_cover_classes_takes_the_rarest_class_first_and_counts_mixed_groups_for_every_class():
    from collections import Counter

    import numpy as np

    from dermsynth.data.splits import cover_classes
    groups = {"mixed": Counter(mel=1, nv=1), "mel2": Counter(mel=2), "nv_a": Counter(nv=1), "nv_b": Counter(nv=3),
              "nv_c": Counter(nv=2)}
    targets = {"train": {"mel": 2.4, "nv": 5.6}, "test": {"mel": 0.6, "nv": 1.4}}
    placed = cover_classes(groups, targets, {}, np.random.default_rng(0))
    # mel (3 images) first: train gets the smallest mel group (mixed, 2 images), test the other;
    # mixed already gives train its nv, so nv covers test only, with its smallest group
    assert placed == {"mixed": "train", "mel2": "test", "nv_a": "test"}


def test_the_warning_says_where_the_class_went():
    cfg = {"group_by": "patient", "fractions": {"train": 0.7, "validation": 0.1, "test": 0.2}, "seed": 0}
    frame = split_dataset(_ingested({"benign": 30}, rare_groups=2), cfg, "clinic")
    assert frame.attrs["warnings"] == [
        "class 'malignant' has no image in the validation split: its 3 image(s) belong to 2 patient group(s) "
        "(1 in test, 1 in train), and a group never straddles two splits. Metrics of this class on validation "
        "(recall, per-class and binary AUC, balanced accuracy) are undefined. Add images of this class from more "
        "patients/lesions, or drop the split (datasets.clinic.split.fractions; datasets.clinic.split.group_by: "
        "lesion or image groups more finely)."]


def test_a_split_left_without_any_image_misses_every_class():
    """Two one-image patients of one class, three splits: train and validation (the bigger share of the two equal
    ones comes first in a stable sort) get one each, test gets nothing — and is still reported."""
    rows = pd.DataFrame({"key": ["a", "b"], "label": "nv", "patient_id": ["P1", "P2"], "lesion_id": "",
                         "split_rule": "auto"})
    cfg = {"group_by": "patient", "fractions": {"train": 0.9, "validation": 0.05, "test": 0.05}, "seed": 0}
    frame = split_dataset(rows, cfg, "clinic")
    assert sorted(frame["split"]) == ["train", "validation"]
    assert frame.attrs["warnings"] == [
        "class 'nv' has no image in the test split: its 2 image(s) belong to 2 patient group(s) "
        "(1 in train, 1 in validation), and a group never straddles two splits. Metrics of this class on test "
        "(recall, per-class and binary AUC, balanced accuracy) are undefined. Add images of this class from more "
        "patients/lesions, or drop the split (datasets.clinic.split.fractions; datasets.clinic.split.group_by: "
        "lesion or image groups more finely)."]


def test_a_class_only_in_a_forced_split_is_missing_from_train_too():
    """The pool holds nevi only; melanomas come only from a source forced into test: train and validation lack them."""
    pool = pd.DataFrame({"key": [f"n{i}" for i in range(6)], "label": "nv", "patient_id": [f"P{i}" for i in range(6)],
                         "lesion_id": "", "split_rule": "auto"})
    forced = pd.DataFrame({"key": ["m0", "m1"], "label": "mel", "patient_id": ["Q0", "Q1"], "lesion_id": "",
                           "split_rule": "test"})
    cfg = {"group_by": "patient", "fractions": {"train": 0.7, "validation": 0.3}, "seed": 0}
    frame = split_dataset(pd.concat([pool, forced], ignore_index=True), cfg, "mixed")
    missing = [m.split(":")[0] for m in frame.attrs["warnings"]]
    assert missing == ["class 'mel' has no image in the train split", "class 'mel' has no image in the validation split",
                       "class 'nv' has no image in the test split"]

    with pytest.raises(InputError) as refused:
        split_dataset(pd.concat([pool, forced], ignore_index=True), {**cfg, "require_all_classes": True}, "mixed")
    first, second, third = frame.attrs["warnings"]
    assert str(refused.value) == (f"{first} {second} {third} (datasets.mixed.split.require_all_classes is set; set "
                                  "it to false to accept such a split with a warning.)")


def test_cover_classes_orders_classes_by_count_not_by_name():
    """The rarest-first case above with the rare class named after the common one (vasc 3 images, akiec 6)."""
    from collections import Counter

    import numpy as np

    from dermsynth.data.splits import cover_classes
    groups = {"mixed": Counter(vasc=1, akiec=1), "vasc2": Counter(vasc=2), "ak_a": Counter(akiec=1),
              "ak_b": Counter(akiec=3), "ak_c": Counter(akiec=2)}
    targets = {"train": {"vasc": 2.4, "akiec": 5.6}, "test": {"vasc": 0.6, "akiec": 1.4}}
    assert cover_classes(groups, targets, {}, np.random.default_rng(0)) == {"mixed": "train", "vasc2": "test",
                                                                           "ak_a": "test"}


def test_cover_classes_skips_bins_without_a_target_for_the_class():
    """A bin with no target for a class, or a zero target, is not given a group of it."""
    from collections import Counter

    import numpy as np

    from dermsynth.data.splits import cover_classes
    groups = {"m1": Counter(mel=1), "m2": Counter(mel=1), "m3": Counter(mel=1), "n1": Counter(nv=1)}
    targets = {"train": {"mel": 2.0, "nv": 1.0}, "validation": {"nv": 0.5}, "test": {"mel": 0.0, "nv": 0.5}}
    placed = cover_classes(groups, targets, {}, np.random.default_rng(0))
    assert sorted(b for g, b in placed.items() if g.startswith("m")) == ["train"]
    assert placed["n1"] == "train"


def test_a_zero_fraction_is_no_split():
    """validation 0.0: no image goes there, and no class is reported missing from it."""
    rows = pd.DataFrame({"key": [f"k{i}" for i in range(4)], "label": ["nv", "nv", "mel", "mel"],
                         "patient_id": ["P0", "P1", "P2", "P3"], "lesion_id": "", "split_rule": "auto"})
    frame = split_dataset(rows, {"group_by": "patient", "fractions": {"train": 0.5, "validation": 0.0, "test": 0.5},
                                 "seed": 0})
    assert sorted(frame["split"]) == ["test", "test", "train", "train"]
    assert frame.attrs["warnings"] == []


def test_all_images_forced_expects_only_the_forced_splits():
    """Nothing left to split: the configured validation fraction does not make an empty validation split expected."""
    rows = pd.DataFrame({"key": ["a", "b", "c", "d"], "label": ["mel", "nv", "mel", "nv"],
                         "patient_id": ["P0", "P1", "P2", "P3"], "lesion_id": "",
                         "split_rule": ["train", "train", "test", "test"]})
    frame = split_dataset(rows, {"group_by": "patient", "fractions": {"train": 0.7, "validation": 0.1, "test": 0.2},
                                 "seed": 0})
    assert frame["split"].tolist() == ["train", "train", "test", "test"]
    assert frame.attrs["warnings"] == []


def test_a_class_a_forced_split_already_has_is_not_covered_again():
    """Pool: melanoma lesions of 1, 2 and 4 images, halves (targets 3.5 and 3.5); a forced test image already gives
    test a melanoma. Covering: only train, with m1. Then m4: train 4·5/3.5 > test 4·4/3.5, test; m2: train
    2·3/3.5 < test 2·6/3.5, train. (Covering test again with m2 would send m4 to train: 5 images against 2.)"""
    rows = pd.DataFrame({"key": ["a", "b", "c", "d", "e", "f", "g", "forced"], "label": "mel", "patient_id": "",
                         "lesion_id": ["m1", "m2", "m2", "m4", "m4", "m4", "m4", "F"],
                         "split_rule": ["auto"] * 7 + ["test"]})
    frame = split_dataset(rows, {"group_by": "lesion", "fractions": {"train": 0.5, "test": 0.5}, "seed": 0})
    assert frame.groupby("lesion_id")["split"].first().to_dict() == {"F": "test", "m1": "train", "m2": "train",
                                                                     "m4": "test"}
