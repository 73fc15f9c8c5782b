"""Group-disjoint, class-stratified splits, and the federated split into hospitals.

Groups are patients (ISIC) or lesions (HAM10000): all images of a group land in the same split or
hospital. Groups are placed greedily, rarest classes and biggest groups first, each into the bin that
would be least full relative to its per-class targets afterwards, which keeps class ratios close to the targets even when
groups mix classes (an ISIC 2020 patient with one melanoma and many nevi).
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError, InputError
from ..locks import exclusive
from ..outputs import check_writable, write_csv, write_json
from ..provenance import provenance
from .options import FederatedSplitOptions, SplitOptions
from .records import clean_id
from .tables import read_table

GROUP_FALLBACK = {"patient": ("patient_id", "lesion_id"), "lesion": ("lesion_id",), "image": ()}


def group_ids(frame: pd.DataFrame, group_by: str) -> pd.Series:
    """The group of each image: connected components of the ids in `GROUP_FALLBACK[group_by]`.

    Two images are in one group when they share any of those ids, directly or through other
    images: with `patient`, an image (patient P, lesion L) and an image (no patient, lesion L) are
    one group — the same lesion seen in an archive that records patients and in one that does not
    (ISIC 2020 vs ISIC 2019) must not straddle two splits. A group is named after its smallest
    patient id (`patient:<id>`), else its smallest lesion id (`lesion:<id>`), else `image:<key>`.
    Missing ids in any spelling (`NA`, `NaN`, `#N/A`, `null`, `-`, empty …; `records.clean_id`) join nothing.

    Ids are not prefixed by source on purpose: a lesion id that two archives share (HAM10000 lesions
    reappear in ISIC 2019) must stay one group, or its images could leak across splits.
    """
    if not len(frame):
        return pd.Series([], dtype=str)
    columns = [c for c in GROUP_FALLBACK[group_by] if c in frame.columns]
    parent = list(range(len(frame)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    cleaned = {column: [clean_id(v) for v in frame[column].tolist()] for column in columns}
    for column in columns:
        first_with: dict[str, int] = {}
        for i, value in enumerate(cleaned[column]):
            if value:
                j = first_with.setdefault(value, i)
                parent[root(i)] = root(j)
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(len(frame)):
        members[root(i)].append(i)
    names = [""] * len(frame)
    keys = frame["key"].astype(str).tolist()
    for rows in members.values():
        name = f"image:{keys[rows[0]]}"
        for column in columns:
            ids = sorted({cleaned[column][i] for i in rows} - {""})
            if ids:
                name = f"{column.removesuffix('_id')}:{ids[0]}"
                break
        for i in rows:
            names[i] = name
    return pd.Series(names, index=frame.index)


def assign_groups(group_counts: dict[str, Counter], targets: dict[str, dict[str, float]],
                  rng: np.random.Generator, initial: dict[str, str] | None = None) -> dict[str, str]:
    """Place every group in one bin, filling per-class targets as evenly as groups allow.

    `initial` holds groups already placed (by `cover_classes`); they count towards their bins.
    """
    class_totals = Counter()
    for counts in group_counts.values():
        class_totals.update(counts)
    placement = dict(initial or {})
    groups = [g for g in group_counts if g not in placement]
    rng.shuffle(groups)
    groups.sort(key=lambda g: (min(class_totals[c] for c in group_counts[g]), -sum(group_counts[g].values())))
    filled = {b: Counter() for b in targets}
    for group, b in placement.items():
        filled[b].update(group_counts[group])
    bins = list(targets)
    for group in groups:
        counts = group_counts[group]

        def fill_after(b: str) -> float:
            """How full, relative to its targets, bin b would be for this group's classes."""
            return sum(n * (filled[b][c] + n) / max(targets[b].get(c, 0.0), 1e-9) for c, n in counts.items())

        best = min(bins, key=fill_after)  # ties go to the first bin in `bins`, a fixed order
        placement[group] = best
        filled[best].update(counts)
    return placement


def cover_classes(group_counts: dict[str, Counter], targets: dict[str, dict[str, float]],
                  covered: dict[str, set], rng: np.random.Generator) -> dict[str, str]:
    """Seed placement so that each bin gets one group of each class while the class has groups left.

    Greedy filling alone puts both groups of a class with two patients into the biggest bin
    (training), leaving validation and test without the class. Rarest classes first; a class's
    bins are served in order of their target share (train, then test, then validation for the
    usual fractions), each with the smallest remaining group holding the class, so that the class
    ratios move as little as possible. `covered[bin]` holds the classes that forced images already
    give the bin.
    """
    totals = Counter()
    for counts in group_counts.values():
        totals.update(counts)
    covered = {b: set(covered.get(b, ())) for b in targets}
    order = list(group_counts)
    rng.shuffle(order)
    placement: dict[str, str] = {}
    for cls in sorted(totals, key=lambda c: (totals[c], c)):
        needing = sorted((b for b in targets if targets[b].get(cls, 0) > 0 and cls not in covered[b]),
                         key=lambda b: -targets[b][cls])
        free = sorted((g for g in order if cls in group_counts[g] and g not in placement),
                      key=lambda g: sum(group_counts[g].values()))
        for b, group in zip(needing, free):
            placement[group] = b
            covered[b].update(group_counts[group])
    return placement


def missing_classes(frame: pd.DataFrame, expected_splits: list[str]) -> list[tuple[str, str]]:
    """(class, split) pairs where a class of the dataset has no image in a split that should hold it."""
    present = frame.groupby("split")["label"].agg(set).to_dict()
    return [(cls, split) for split in expected_splits for cls in sorted(set(frame["label"]))
            if cls not in present.get(split, set())]


def _coverage_message(frame: pd.DataFrame, cls: str, split: str, group_by: str, dataset: str) -> str:
    rows = frame[frame["label"] == cls]
    where = ", ".join(f"{n} in {s}" for s, n in rows.groupby("split")["group"].nunique().items())
    return (f"class '{cls}' has no image in the {split} split: its {len(rows)} image(s) belong to "
            f"{rows['group'].nunique()} {group_by} group(s) ({where}), and a group never straddles two splits. "
            f"Metrics of this class on {split} (recall, per-class and binary AUC, balanced accuracy) are "
            "undefined. Add images of this class from more patients/lesions, or drop the split "
            f"(datasets.{dataset}.split.fractions; datasets.{dataset}.split.group_by: lesion or image groups "
            "more finely).")


def _class_counts_by_group(frame: pd.DataFrame) -> dict[str, Counter]:
    counts: dict[str, Counter] = defaultdict(Counter)
    for group, label in zip(frame["group"], frame["label"]):
        counts[group][label] += 1
    return counts


def split_dataset(ingested: pd.DataFrame, split_cfg: dict, dataset: str = "<dataset>") -> pd.DataFrame:
    """The manifest: ingested rows plus `group` and `split` columns. `dataset` names the config keys in
    messages (`datasets.<dataset>.split…`).

    Raises:
        InputError: sources force one group into two splits, or `require_all_classes` and a class is missing
            from a split."""
    frame = ingested.copy()
    frame["group"] = group_ids(frame, split_cfg["group_by"])
    frame["split"] = frame["split_rule"].where(frame["split_rule"] != "auto", "")

    forced = frame[frame["split"] != ""].groupby("group")["split"].agg(set)
    conflicts = forced[forced.map(len) > 1]
    if len(conflicts):
        group, splits = conflicts.index[0], sorted(conflicts.iloc[0])
        raise InputError(f"group {group} has images that sources force into different splits ({', '.join(splits)}); "
                         "a patient/lesion cannot straddle splits — fix the sources' `split` settings")
    forced_split = forced.map(lambda s: next(iter(s)))
    frame.loc[frame["group"].isin(forced_split.index), "split"] = frame["group"].map(forced_split)

    pool = frame[frame["split"] == ""]
    fractions = {s: f for s, f in split_cfg["fractions"].items() if f > 0}
    if len(pool):
        totals = Counter(pool["label"])
        targets = {s: {c: f * n for c, n in totals.items()} for s, f in fractions.items()}
        rng = np.random.default_rng(split_cfg["seed"])
        group_counts = _class_counts_by_group(pool)
        covered = frame[frame["split"] != ""].groupby("split")["label"].agg(set).to_dict()
        initial = cover_classes(group_counts, targets, covered, rng)
        placement = assign_groups(group_counts, targets, rng, initial)
        frame.loc[pool.index, "split"] = pool["group"].map(placement)
    _check_coverage(frame, split_cfg, list(fractions) if len(pool) else [], dataset)
    return frame


def _check_coverage(frame: pd.DataFrame, split_cfg: dict, auto_splits: list[str], dataset: str) -> None:
    """Warn about (or, with `require_all_classes`, refuse) a class missing from a split.

    The expected splits are those with a positive fraction (when images are split automatically)
    and those that sources force images into. Warnings are kept in `frame.attrs["warnings"]`.

    Raises:
        InputError: `split.require_all_classes` is set and a class is missing from a split.
    """
    expected = [s for s in ("train", "validation", "test") if s in auto_splits or s in set(frame["split"])]
    problems = [_coverage_message(frame, c, s, split_cfg["group_by"], dataset)
                for c, s in missing_classes(frame, expected)]
    frame.attrs["warnings"] = problems
    if problems and split_cfg.get("require_all_classes"):
        raise InputError(" ".join(problems) + f" (datasets.{dataset}.split.require_all_classes is set; set it to "
                         "false to accept such a split with a warning.)")
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)


def federated_split(manifest: pd.DataFrame, fed_cfg: dict, dataset: str = "<dataset>") -> pd.DataFrame:
    """Assign groups of the pool splits to hospitals of the configured sizes, same class ratio each. A hospital
    left without a class is a warning (kept in `attrs["warnings"]`, printed). Raises ConfigError when the
    hospitals ask for more images than the pool holds."""
    pool = manifest[manifest["split"].isin(fed_cfg["pool"])].copy()
    wanted = sum(fed_cfg["hospitals"].values())
    if wanted > len(pool):
        raise ConfigError(f"datasets.{dataset}.federated.hospitals ask for {wanted} images but the pool "
                          f"(splits {', '.join(fed_cfg['pool'])}) has {len(pool)}; reduce the sizes or widen "
                          f"datasets.{dataset}.federated.pool")
    totals = Counter(pool["label"])
    share = {c: n / len(pool) for c, n in totals.items()}
    targets = {h: {c: size * share[c] for c in totals} for h, size in fed_cfg["hospitals"].items()}
    leftover = len(pool) - wanted
    if leftover:
        targets["unassigned"] = {c: leftover * share[c] for c in totals}
    placement = assign_groups(_class_counts_by_group(pool), targets, np.random.default_rng(fed_cfg["seed"]))
    pool["hospital"] = pool["group"].map(placement)
    table = pool[["key", "hospital", "split", "label", "group"]].sort_values("key").reset_index(drop=True)
    table.attrs["warnings"] = _hospital_coverage(table, list(fed_cfg["hospitals"]), dataset)
    for problem in table.attrs["warnings"]:
        print(f"warning: {problem}", file=sys.stderr)
    return table


def _hospital_coverage(table: pd.DataFrame, hospitals: list[str], dataset: str) -> list[str]:
    """A sentence for each hospital that holds no image, or no image of a class of the pool."""
    classes = sorted(set(table["label"]))
    held = table.groupby("hospital")["label"].agg(set).to_dict()
    problems = []
    for hospital in hospitals:
        lacking = [c for c in classes if c not in held.get(hospital, set())]
        if lacking:
            problems.append(f"hospital '{hospital}' holds {int((table['hospital'] == hospital).sum())} image(s) and "
                            f"none of class(es) {', '.join(lacking)}: its groups are too few to give it every class. "
                            f"Raise its size (datasets.{dataset}.federated.hospitals.{hospital}) or widen "
                            f"datasets.{dataset}.federated.pool.")
    return problems


def split_summary(frame: pd.DataFrame, by: str) -> dict:
    """Images, groups, class counts and class fractions per bin (split or hospital) of an assignment."""
    table = frame.groupby([by, "label"]).size().unstack(fill_value=0)
    return {
        "images": {k: int(v) for k, v in frame[by].value_counts().sort_index().items()},
        "groups": {k: int(v) for k, v in frame.groupby(by)["group"].nunique().items()},
        "class_counts": {b: {c: int(n) for c, n in row.items()} for b, row in table.iterrows()},
        "class_fractions": {b: {c: round(float(n) / max(int(row.sum()), 1), 4) for c, n in row.items()}
                            for b, row in table.iterrows()},
    }


def check_disjoint(frame: pd.DataFrame, by: str) -> None:
    """Raise if any group sits in two bins (used after every split as a guard)."""
    spread = frame.groupby("group")[by].nunique()
    if (spread > 1).any():
        raise AssertionError(f"groups in several {by}s: {list(spread[spread > 1].index[:5])}")


def write_assignment(frame: pd.DataFrame, table_path: str | Path, summary_path: str | Path, by: str,
                     options: SplitOptions | FederatedSplitOptions, section: dict,
                     warnings: list[str] | None = None) -> dict:
    """Write an assignment of images to bins (`by`: the `split` or `hospital` column of `frame`) as CSV, and
    its summary as JSON: dataset, `split_summary` (images, groups, class counts and fractions per bin),
    `warnings`, provenance of `options` with the seed of `section` (the split or federated settings).
    The summary of an earlier run is removed first and written last, so a killed run never leaves a table
    beside a summary of another assignment. The caller holds the table's lock (`_locked_outputs`).
    Returns the summary. Raises AssertionError if a group sits in two bins, OutputError on a disk error."""
    check_disjoint(frame, by)
    summary_path = Path(summary_path)
    summary_path.unlink(missing_ok=True)
    write_csv(table_path, frame)
    summary = split_summary(frame, by)
    write_json(summary_path, {"dataset": options.dataset, **summary, "warnings": warnings or [],
                              "provenance": provenance(options.step, options.to_dict(), seed=section["seed"])})
    print(f"{options.step} {options.dataset}: images {summary['images']}, groups {summary['groups']}",
          file=sys.stderr)
    return summary


@contextlib.contextmanager
def _locked_outputs(verb: str, *paths: str | Path):
    """Prove the outputs' folders writable, then hold the first output's lock (one writer per output).
    Raises BusyError (another process writes it) or OutputError (a folder cannot be written)."""
    for folder in {Path(p).parent for p in paths}:
        check_writable(folder)
    with exclusive(paths[0], verb):
        yield


def write_split(options: SplitOptions, ingested_csv: str | Path, manifest_path: str | Path,
                summary_path: str | Path) -> dict:
    """`dermsynth data split`: the manifest of dataset `options.dataset` — its ingested.csv (one row per stored
    image) plus `group` and `split` columns (`split_dataset` with `options.split`) — and splits.json (counts and
    class ratios per split, class-coverage warnings). Returns the summary.

    Raises:
        InputError: sources force one group into two splits, or `require_all_classes` and a class is missing
            from a split.
        BusyError: another process writes the manifest. OutputError: an output cannot be written."""
    with _locked_outputs("split", manifest_path, summary_path):
        ingested = read_table(ingested_csv, ["key", "label", "split_rule"], "an ingested.csv of `dermsynth data ingest`",
                              "give the ingested.csv that the ingest of this dataset wrote (or run the ingest again)")
        manifest = split_dataset(ingested, options.split, options.dataset)
        return write_assignment(manifest, manifest_path, summary_path, "split", options, options.split,
                                manifest.attrs.get("warnings", []))


def write_federated_split(options: FederatedSplitOptions, manifest_csv: str | Path, table_path: str | Path,
                          summary_path: str | Path) -> dict:
    """`dermsynth data federated-split`: federated.csv (key, hospital, split, label, group for each image of the
    pool splits of `manifest_csv`; `federated_split` with `options.federated`) and its summary per hospital.
    Returns the summary. Raises ConfigError when the hospitals ask for more images than the pool holds,
    BusyError when another process writes the table, OutputError when an output cannot be written."""
    with _locked_outputs("federated-split", table_path, summary_path):
        manifest = read_table(manifest_csv, ["key", "split", "label", "group"], "a manifest.csv of `dermsynth data split`",
                              "give the manifest.csv that the split of this dataset wrote (or run the split again)")
        assignment = federated_split(manifest, options.federated, options.dataset)
        return write_assignment(assignment, table_path, summary_path, "hospital", options, options.federated,
                                assignment.attrs.get("warnings", []))


__all__ = ["assign_groups", "check_disjoint", "cover_classes", "missing_classes", "federated_split", "split_dataset",
           "split_summary", "write_assignment", "write_federated_split", "write_split"]
