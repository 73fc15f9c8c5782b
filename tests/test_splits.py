"""Splits are group-disjoint, stratified, seeded; hospitals have the sizes and class ratio asked for."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import yaml

from dermsynth.config import validate_config
from dermsynth.data.ingest import ingest
from dermsynth.data.options import FederatedSplitOptions, IngestOptions, SplitOptions
from dermsynth.data.splits import assign_groups, federated_split, group_ids, split_dataset
from dermsynth.errors import ConfigError, InputError

from .conftest import demo_config


def _verb(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "dermsynth.cli", *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_split_verbs_by_hand_and_by_options_agree(demo_root, isic_ingested, tmp_path):
    """`--config` + `--dataset` (by hand) and `--options` (the workflow) give the same files, byte for byte
    (the provenance's time stamp aside); a `--dataset` that disagrees with the options file is an error."""
    raw = demo_config(demo_root)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    cfg = validate_config(raw, workflow=True)
    ingested = tmp_path / "ingested.csv"
    isic_ingested.to_csv(ingested, index=False)
    for how in ("hand", "options"):
        source = (["--options", SplitOptions.from_config(cfg, dataset="isic").write(tmp_path / "options")]
                  if how == "options" else ["--config", str(tmp_path / "config.yaml"), "--dataset", "isic"])
        _verb("data", "split", *source, "--ingested", str(ingested), "--manifest", str(tmp_path / f"{how}-manifest.csv"),
              "--summary", str(tmp_path / f"{how}-splits.json"))
        source = (["--options", FederatedSplitOptions.from_config(cfg, dataset="isic").write(tmp_path / "options")]
                  if how == "options" else ["--config", str(tmp_path / "config.yaml"), "--dataset", "isic"])
        _verb("data", "federated-split", *source, "--manifest", str(tmp_path / f"{how}-manifest.csv"),
              "--out", str(tmp_path / f"{how}-federated.csv"), "--summary", str(tmp_path / f"{how}-federated.json"))
    for name in ("manifest.csv", "federated.csv"):
        assert (tmp_path / f"hand-{name}").read_bytes() == (tmp_path / f"options-{name}").read_bytes()
    for name in ("splits.json", "federated.json"):
        hand, options = (json.loads((tmp_path / f"{how}-{name}").read_text()) for how in ("hand", "options"))
        for record in (hand, options):
            del record["provenance"]["created"]
        assert hand == options and hand["provenance"]["config"]["dataset"] == "isic"
    assert set(pd.read_csv(tmp_path / "hand-manifest.csv")["key"]) == set(isic_ingested["key"])
    options = SplitOptions.from_config(cfg, dataset="isic").write(tmp_path / "options")
    result = subprocess.run([sys.executable, "-m", "dermsynth.cli", "data", "split", "--options", options, "--dataset",
                             "ham10000", "--ingested", str(ingested), "--manifest", str(tmp_path / "m.csv"),
                             "--summary", str(tmp_path / "s.json")], capture_output=True, text=True)
    assert result.returncode != 0 and "--dataset ham10000 disagrees" in result.stderr


@pytest.fixture(scope="module")
def isic_ingested(demo_cfg, tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("isic")
    ingest(IngestOptions.from_config(demo_cfg, dataset="isic"), out)
    return pd.read_csv(out / "ingested.csv", dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def ham_ingested(ingested_ham) -> pd.DataFrame:
    return pd.read_csv(ingested_ham / "ingested.csv", dtype=str, keep_default_na=False)


def test_patients_never_straddle_splits(demo_cfg, isic_ingested):
    manifest = split_dataset(isic_ingested, demo_cfg["datasets"]["isic"]["split"])
    isic2020 = manifest[manifest["source"] == "isic2020"]
    assert (isic2020.groupby("patient_id")["split"].nunique() == 1).all()
    assert (manifest.groupby("group")["split"].nunique() == 1).all()
    assert set(manifest["split"]) == {"train", "validation", "test"}


def test_lesions_never_straddle_splits_and_forced_sources_stay_put(demo_cfg, ham_ingested):
    manifest = split_dataset(ham_ingested, demo_cfg["datasets"]["ham10000"]["split"])
    ham = manifest[manifest["source"] == "ham10000"]
    assert (ham.groupby("lesion_id")["split"].nunique() == 1).all()
    assert set(manifest.loc[manifest["source"] == "isic2018_test", "split"]) == {"test"}
    assert set(manifest.loc[manifest["source"] == "isic2018_validation", "split"]) == {"validation"}
    assert set(ham["split"]) == {"train", "validation"}


def test_class_ratios_follow_the_whole_set(demo_cfg, isic_ingested):
    manifest = split_dataset(isic_ingested, demo_cfg["datasets"]["isic"]["split"])
    overall = (manifest["label"] == "malignant").mean()
    for split, rows in manifest.groupby("split"):
        assert abs((rows["label"] == "malignant").mean() - overall) < 0.06, split
    fractions = manifest["split"].value_counts(normalize=True)
    assert abs(fractions["train"] - 0.7) < 0.12 and abs(fractions["test"] - 0.2) < 0.12


def test_same_seed_same_split_other_seed_other_split(demo_cfg, ham_ingested):
    spec = demo_cfg["datasets"]["ham10000"]["split"]
    first = split_dataset(ham_ingested, spec)["split"]
    assert first.equals(split_dataset(ham_ingested, spec)["split"])
    assert not first.equals(split_dataset(ham_ingested, {**spec, "seed": spec["seed"] + 1})["split"])


def test_lesion_shared_by_two_sources_is_one_group():
    rows = pd.DataFrame({"key": ["a", "b", "c", "d"], "source": ["ham", "isic2019", "ham", "ham"],
                         "label": ["mel", "mel", "nv", "nv"], "patient_id": "", "lesion_id": ["L1", "L1", "L2", "L3"],
                         "split_rule": ["auto", "test", "auto", "auto"]})
    manifest = split_dataset(rows, {"group_by": "lesion", "fractions": {"train": 0.5, "test": 0.5}, "seed": 0})
    assert manifest.set_index("key").loc["a", "split"] == "test"  # follows its lesion into the forced split


def test_contradicting_forced_splits_are_an_error():
    rows = pd.DataFrame({"key": ["a", "b"], "source": ["s1", "s2"], "label": ["mel", "mel"], "patient_id": ["P", "P"],
                         "lesion_id": "", "split_rule": ["train", "test"]})
    with pytest.raises(InputError) as refused:
        split_dataset(rows, {"group_by": "patient", "fractions": {"train": 1.0}, "seed": 0})
    assert str(refused.value) == ("group patient:P has images that sources force into different splits (test, train); "
                                  "a patient/lesion cannot straddle splits — fix the sources' `split` settings")


def test_assign_groups_against_hand_made_targets():
    rng = np.random.default_rng(0)
    groups = {f"g{i}": Counter({"nv": int(rng.integers(1, 6))}) for i in range(200)}
    groups.update({f"m{i}": Counter({"mel": 1, "nv": int(rng.integers(0, 3))}) for i in range(40)})
    totals = Counter()
    for counts in groups.values():
        totals.update(counts)
    targets = {b: {c: f * n for c, n in totals.items()} for b, f in (("a", 0.6), ("b", 0.3), ("c", 0.1))}
    placement = assign_groups(groups, targets, np.random.default_rng(1))
    filled = {b: Counter() for b in targets}
    for group, b in placement.items():
        filled[b].update(groups[group])
    for b in targets:
        for c in totals:
            assert abs(filled[b][c] - targets[b][c]) <= 6, (b, c, filled[b][c], targets[b][c])


def test_federated_hospitals_of_the_demo_archives(demo_cfg, isic_ingested):
    manifest = split_dataset(isic_ingested, demo_cfg["datasets"]["isic"]["split"])
    fed = federated_split(manifest, {"hospitals": {"h1": 6, "h2": 30, "h3": 50}, "pool": ["train", "validation"],
                                     "seed": 3})
    sizes = fed["hospital"].value_counts()
    for name, size in (("h1", 6), ("h2", 30), ("h3", 50)):
        assert abs(sizes[name] - size) <= max(6, 0.15 * size), (name, sizes[name])
    assert (fed.groupby("group")["hospital"].nunique() == 1).all()
    pool_ratio = (fed["label"] == "malignant").mean()
    for name in ("h2", "h3"):
        assert abs((fed.loc[fed["hospital"] == name, "label"] == "malignant").mean() - pool_ratio) < 0.05
    assert set(fed["split"]) <= {"train", "validation"}


def test_federated_sizes_beyond_the_pool_are_a_config_error(demo_cfg, isic_ingested):
    manifest = split_dataset(isic_ingested, demo_cfg["datasets"]["isic"]["split"])
    with pytest.raises(ConfigError, match="federated.hospitals ask for 100000 images"):
        federated_split(manifest, {"hospitals": {"h1": 100000}, "pool": ["train"], "seed": 0})


def _mixed_identity_rows(seed: int) -> pd.DataFrame:
    """Images of patients (several lesions each), of patient-less lesions with 2–5 images each (ISIC 2019
    and HAM10000 images have a lesion id but no patient), and images with neither, labels mixed."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(12):
        for i in range(int(rng.integers(1, 6))):
            rows.append({"patient_id": f"P{p}", "lesion_id": f"PL{p}-{i % 2}", "label": rng.choice(["mel", "nv"])})
    for lesion in range(40):
        label = rng.choice(["mel", "nv", "bcc"], p=[0.3, 0.5, 0.2])
        for _ in range(int(rng.integers(2, 6))):
            rows.append({"patient_id": "", "lesion_id": f"L{lesion}", "label": label})
    for _ in range(25):
        rows.append({"patient_id": "", "lesion_id": "", "label": rng.choice(["mel", "nv", "bcc"])})
    frame = pd.DataFrame(rows)
    frame.insert(0, "key", [f"img{i:04d}" for i in rng.permutation(len(frame))])
    frame["source"], frame["split_rule"] = "isic2019", "auto"
    return frame


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_patient_grouping_keeps_patientless_lesions_together(seed):
    """Disjointness checked on the identities themselves, not on the code's `group` column: every patient's
    images share one split, and so do every patient-less lesion's."""
    rows = _mixed_identity_rows(seed)
    manifest = split_dataset(rows, {"group_by": "patient", "fractions": {"train": 0.6, "validation": 0.2,
                                                                          "test": 0.2}, "seed": seed})
    assert len(manifest) == len(rows) and set(manifest["key"]) == set(rows["key"])
    with_patient = manifest[manifest["patient_id"] != ""]
    assert (with_patient.groupby("patient_id")["split"].nunique() == 1).all()
    patientless = manifest[(manifest["patient_id"] == "") & (manifest["lesion_id"] != "")]
    assert patientless["lesion_id"].nunique() == 40
    assert (patientless.groupby("lesion_id")["split"].nunique() == 1).all()
    assert set(manifest["split"]) == {"train", "validation", "test"}


def test_lesion_grouping_ignores_patients_and_images_without_ids_are_their_own_groups():
    rows = _mixed_identity_rows(3)
    manifest = split_dataset(rows, {"group_by": "lesion", "fractions": {"train": 0.5, "test": 0.5}, "seed": 3})
    with_lesion = manifest[manifest["lesion_id"] != ""]
    assert (with_lesion.groupby("lesion_id")["split"].nunique() == 1).all()
    # a patient's two lesions are separate groups here: over 12 patients some must be split apart
    patients = manifest[manifest["patient_id"] != ""]
    assert (patients.groupby("patient_id")["split"].nunique() > 1).any()
    by_image = split_dataset(rows, {"group_by": "image", "fractions": {"train": 0.5, "test": 0.5}, "seed": 3})
    assert (by_image[by_image["lesion_id"] != ""].groupby("lesion_id")["split"].nunique() > 1).any()


def test_a_lesion_seen_with_and_without_its_patient_stays_in_one_split():
    """Connected identities: image a (patient P, lesion L) and image b (no patient, lesion L) are one lesion."""
    rows = pd.DataFrame({"key": [f"k{i}" for i in range(40)], "source": ["isic2020"] * 20 + ["isic2019"] * 20,
                         "label": ["mel", "nv"] * 20, "patient_id": [f"P{i}" for i in range(20)] + [""] * 20,
                         "lesion_id": [f"L{i}" for i in range(20)] * 2, "split_rule": "auto"})
    manifest = split_dataset(rows, {"group_by": "patient", "fractions": {"train": 0.5, "test": 0.5}, "seed": 0})
    assert (manifest.groupby("lesion_id")["split"].nunique() == 1).all()


def test_federated_hospitals_on_patients_and_patientless_lesions():
    rows = _mixed_identity_rows(4)
    manifest = split_dataset(rows, {"group_by": "patient", "fractions": {"train": 0.8, "test": 0.2}, "seed": 4})
    pool = manifest[manifest["split"] == "train"]
    sizes = {"h1": 20, "h2": 40, "h3": 60}
    fed = federated_split(manifest, {"hospitals": sizes, "pool": ["train"], "seed": 1})
    assert sorted(fed["key"]) == sorted(pool["key"]) and fed["key"].is_monotonic_increasing
    counts = fed["hospital"].value_counts()
    leftover = len(pool) - sum(sizes.values())
    for name, size in {**sizes, "unassigned": leftover}.items():
        assert abs(counts.get(name, 0) - size) <= 6, (name, counts.get(name, 0), size)
    identified = fed.merge(manifest[["key", "patient_id", "lesion_id"]], on="key")
    with_patient = identified[identified["patient_id"] != ""]
    assert (with_patient.groupby("patient_id")["hospital"].nunique() == 1).all()
    lesions = identified[(identified["patient_id"] == "") & (identified["lesion_id"] != "")]
    assert (lesions.groupby("lesion_id")["hospital"].nunique() == 1).all()
    overall = (pool["label"] == "mel").mean()
    for name in ("h2", "h3"):
        assert abs((fed.loc[fed["hospital"] == name, "label"] == "mel").mean() - overall) < 0.1
    exact = federated_split(manifest, {"hospitals": {"a": len(pool) // 2, "b": len(pool) - len(pool) // 2},
                                       "pool": ["train"], "seed": 1})
    assert set(exact["hospital"]) == {"a", "b"}  # no leftover: no 'unassigned' bin
    with pytest.raises(ConfigError, match=f"ask for {len(pool) + 1} images but the pool"):
        federated_split(manifest, {"hospitals": {"a": len(pool) + 1}, "pool": ["train"], "seed": 1})


def test_assign_groups_places_big_groups_first_into_the_least_filled_bin():
    """By hand: groups of 5, 2, 1, 1 images of one class, targets 6 and 3. Biggest first: 5 → a (5·5/6 < 5·5/3),
    2 → b (2·2/3 < 2·7/6), 1 → a (tie 1 = 1: the first bin), 1 → b (3/3 < 7/6): exactly 6 and 3."""
    groups = {"g5": Counter({"x": 5}), "g2": Counter({"x": 2}), "g1": Counter({"x": 1}), "h1": Counter({"x": 1})}
    for seed in range(5):  # the shuffle only orders groups of equal size and rarity
        placement = assign_groups(groups, {"a": {"x": 6.0}, "b": {"x": 3.0}}, np.random.default_rng(seed))
        filled = Counter()
        for group, b in placement.items():
            filled[b] += sum(groups[group].values())
        assert placement["g5"] == "a" and placement["g2"] == "b" and filled == {"a": 6, "b": 3}
    # a class a bin has no target for counts as (almost) full there
    placement = assign_groups({"m": Counter({"mel": 1})}, {"a": {"nv": 5.0}, "b": {"mel": 1.0, "nv": 1.0}},
                              np.random.default_rng(0))
    assert placement == {"m": "b"}


def test_split_fractions_count_images_not_groups():
    """Groups of 4 images and single images: the split sizes follow the fractions in images."""
    rows = pd.DataFrame({"key": [f"k{i:03d}" for i in range(120)], "source": "s", "label": "nv", "patient_id": "",
                         "lesion_id": [f"L{i // 4}" if i < 80 else "" for i in range(120)], "split_rule": "auto"})
    manifest = split_dataset(rows, {"group_by": "lesion", "fractions": {"train": 0.75, "test": 0.25, "none": 0.0},
                                    "seed": 0})
    sizes = manifest["split"].value_counts()
    assert abs(sizes["train"] - 90) <= 3 and abs(sizes["test"] - 30) <= 3 and "none" not in sizes
    assert (manifest[manifest["lesion_id"] != ""].groupby("lesion_id")["split"].nunique() == 1).all()
    assert manifest.loc[manifest["lesion_id"] == "", "group"].str.startswith("image:k").all()


def test_group_ids_by_hand_with_missing_ids_and_a_labelled_index():
    """Missing ids (NaN, as after concatenating a source that has no patient column) join nothing and name nothing;
    ids are stripped; the groups keep the frame's own index. By hand, with `patient`: r0 and r1 share lesion L1
    (named after r0's patient P2); r5 (" P1 ") and r6 share patient P1, r6 and r3 lesion L3; r2 is its lesion L2;
    r4 has no id at all. With `lesion`: patients are ignored, r5 has no lesion."""
    nan = float("nan")
    frame = pd.DataFrame({"key": [f"k{i}" for i in range(7)],
                          "patient_id": ["P2", nan, nan, nan, nan, " P1 ", "P1"],
                          "lesion_id": ["L1", "L1", "L2", "L3", nan, nan, "L3"]},
                         index=[f"r{i}" for i in range(7)])
    assert group_ids(frame, "patient").to_dict() == {
        "r0": "patient:P2", "r1": "patient:P2", "r2": "lesion:L2", "r3": "patient:P1", "r4": "image:k4",
        "r5": "patient:P1", "r6": "patient:P1"}
    assert group_ids(frame, "lesion").to_dict() == {
        "r0": "lesion:L1", "r1": "lesion:L1", "r2": "lesion:L2", "r3": "lesion:L3", "r4": "image:k4",
        "r5": "image:k5", "r6": "lesion:L3"}


def test_assign_groups_counts_the_groups_placed_beforehand():
    """Two groups of 2, targets 2 and 2, group a already in bin A: b goes to B (2·4/2 > 2·2/2), not to A."""
    groups = {"a": Counter({"x": 2}), "b": Counter({"x": 2})}
    placement = assign_groups(groups, {"A": {"x": 2.0}, "B": {"x": 2.0}}, np.random.default_rng(0), {"a": "A"})
    assert placement == {"a": "A", "b": "B"}


def test_assign_groups_places_the_rarest_class_before_bigger_groups():
    """The only melanoma (in a group with a nevus) chooses first, before the bigger nevus group. Targets: A and B
    {nv: 2, mel: 0.5} each. mix: 1/0.5 + 1/2 = 2.5 in both, a tie: A. nv3: A 3·(1+3)/2 = 6, B 3·3/2 = 4.5: B.
    (Biggest first, nv3 would take A and push the melanoma to B.)"""
    groups = {"nv3": Counter({"nv": 3}), "mix": Counter({"mel": 1, "nv": 1})}
    targets = {"A": {"nv": 2.0, "mel": 0.5}, "B": {"nv": 2.0, "mel": 0.5}}
    for seed in range(3):
        assert assign_groups(groups, targets, np.random.default_rng(seed)) == {"mix": "A", "nv3": "B"}


def _lesions(sizes: dict[str, str]) -> pd.DataFrame:
    """One image per letter: {"L1": "mn"} is lesion L1 with a melanoma and a nevus image."""
    labels = {"m": "mel", "n": "nv"}
    return pd.DataFrame([{"key": f"{lesion}-{i}", "label": labels[c], "patient_id": "", "lesion_id": lesion,
                          "split_rule": "auto"} for lesion, letters in sizes.items() for i, c in enumerate(letters)])


@pytest.mark.parametrize("seed", range(5))
def test_split_by_hand_counts_images_per_group(seed):
    """Lesions of 4, 3, 2 and 1 nevus images, halves (targets 5 and 5). Covering: the smallest group to train
    (L1), the next to test (L2). Then biggest first: L4 to train (4·5/5 = 4 < 4·6/5), L3 to test
    (3·5/5 = 3 < 3·8/5): 5 images each. No ties, so every seed gives this."""
    frame = split_dataset(_lesions({"L4": "nnnn", "L3": "nnn", "L2": "nn", "L1": "n"}),
                          {"group_by": "lesion", "fractions": {"train": 0.5, "test": 0.5}, "seed": seed})
    assert frame.groupby("lesion_id")["split"].first().to_dict() == {"L1": "train", "L2": "test", "L3": "test",
                                                                     "L4": "train"}


def test_split_targets_weigh_each_class_by_its_own_total():
    """Mixed lesions, halves: mel 5 images (targets 2.5 and 2.5), nv 13 (6.5 and 6.5). Covering, rarest class
    first: mel gives train G0 (1 image) and test G4 (mmn: also test's nevus); nv gives train G2. Then G1 (mmnnnnn,
    rarer class than G3's): train 2·3/2.5 + 5·7/6.5 = 7.78 < test 2·4/2.5 + 5·6/6.5 = 7.82; G3 (5 nv):
    train 5·12/6.5 > test 5·6/6.5. Targets not proportional to the class totals would send G1 to test."""
    frame = split_dataset(_lesions({"G0": "m", "G1": "mmnnnnn", "G2": "nn", "G3": "nnnnn", "G4": "mmn"}),
                          {"group_by": "lesion", "fractions": {"train": 0.5, "test": 0.5}, "seed": 0})
    assert frame.groupby("lesion_id")["split"].first().to_dict() == {"G0": "train", "G1": "train", "G2": "train",
                                                                     "G3": "test", "G4": "test"}


def test_the_seed_decides_the_split():
    """Many equal groups (ties that only the seeded shuffle orders): the same seed twice gives the same split,
    on a fresh copy of the rows; five other seeds do not all give that split."""
    rows = _mixed_identity_rows(5)
    cfg = {"group_by": "patient", "fractions": {"train": 0.6, "validation": 0.2, "test": 0.2}, "seed": 11}
    first = split_dataset(rows.copy(), cfg)["split"]
    assert first.equals(split_dataset(rows.copy(), cfg)["split"])
    assert not all(first.equals(split_dataset(rows.copy(), {**cfg, "seed": s})["split"]) for s in range(5))


def _single_image_groups(n_per_class: dict) -> pd.DataFrame:
    """A manifest already split: every image its own group, all in 'train'."""
    rows = [{"key": f"{label}{i:02d}", "label": label, "split": "train", "group": f"g-{label}{i:02d}"}
            for label, n in n_per_class.items() for i in range(n)]
    return pd.DataFrame(rows)


def test_federated_hospitals_get_exact_sizes_and_class_ratios_by_hand():
    """20 one-image groups, 10 nv and 10 mel; hospitals of 4 and 8: with the pool's 1:1 ratio the targets are
    2+2, 4+4 and 4+4 unassigned, and single-image groups can meet every one exactly. The output has exactly
    the five documented columns, sorted by key, with a fresh index."""
    manifest = _single_image_groups({"nv": 10, "mel": 10})
    fed = federated_split(manifest, {"hospitals": {"h1": 4, "h2": 8}, "pool": ["train"], "seed": 0})
    assert list(fed.columns) == ["key", "hospital", "split", "label", "group"]
    assert list(fed.index) == list(range(20)) and fed["key"].tolist() == sorted(manifest["key"])
    counts = fed.groupby(["hospital", "label"]).size().to_dict()
    assert counts == {("h1", "mel"): 2, ("h1", "nv"): 2, ("h2", "mel"): 4, ("h2", "nv"): 4,
                      ("unassigned", "mel"): 4, ("unassigned", "nv"): 4}


def test_federated_assignment_follows_its_seed():
    """Ties between equal one-image groups are broken by the configured seed: the same seed twice gives the
    same hospitals (a reproducibility check; the seed decides among many equally good assignments)."""
    manifest = _single_image_groups({"nv": 30, "mel": 30})
    config = {"hospitals": {"h1": 10, "h2": 20}, "pool": ["train"], "seed": 5}
    first = federated_split(manifest, config)["hospital"].tolist()
    assert federated_split(manifest, config)["hospital"].tolist() == first


def test_federated_pool_too_small_names_the_numbers_and_the_fix():
    manifest = _single_image_groups({"nv": 3, "mel": 2})
    manifest.loc[0, "split"] = "validation"
    with pytest.raises(ConfigError) as caught:
        federated_split(manifest, {"hospitals": {"h1": 3, "h2": 2}, "pool": ["train", "test"], "seed": 0}, "isic")
    assert str(caught.value) == ("datasets.isic.federated.hospitals ask for 5 images but the pool (splits train, "
                                 "test) has 4; reduce the sizes or widen datasets.isic.federated.pool")
