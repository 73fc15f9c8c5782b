# Shared set-up: validate the config (a wrong key stops here, named), and give each job a config
# file holding only the sections that job reads. Jobs get that file as a parameter, named by its
# content, so changing one section re-runs exactly the jobs that read it.

import hashlib
import json
from pathlib import Path

import yaml

from dermsynth.config import validate_config
from dermsynth.data.demo.archives import expected_outputs as demo_expected_outputs
from dermsynth.data.sources import required_files

config = validate_config(config, origin="the workflow config (config/config.yaml + --config)")

DEMO_FILES, DEMO_FOLDERS = demo_expected_outputs(config["demo"])
DATASETS = list(config["datasets"])
GANS = list(config["gans"])
FEDERATED = [name for name, ds in config["datasets"].items() if "federated" in ds]


def rule_config(sections):
    """Path of a config file with just `sections` (written once per distinct content)."""
    text = yaml.safe_dump(sections, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = Path(".snakemake") / "dermsynth-config" / f"{digest}.yaml"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{digest}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return str(path)


def _dataset_sources(name):
    return {e["source"]: config["sources"][e["source"]] for e in config["datasets"][name]["sources"]}


def ingest_config(wildcards):
    """What an ingest job reads: the dataset (without its splits), its sources, ingest settings."""
    ds = {k: v for k, v in config["datasets"][wildcards.dataset].items() if k in ("labels", "resolution", "sources")}
    settings = {k: v for k, v in config["ingest"].items() if k != "workers"}
    return rule_config({"datasets": {wildcards.dataset: ds}, "sources": _dataset_sources(wildcards.dataset),
                        "ingest": settings})


def split_config(wildcards):
    ds = {k: v for k, v in config["datasets"][wildcards.dataset].items() if k != "federated"}
    return rule_config({"datasets": {wildcards.dataset: ds}, "sources": _dataset_sources(wildcards.dataset)})


def federated_config(wildcards):
    return rule_config({"datasets": {wildcards.dataset: config["datasets"][wildcards.dataset]},
                        "sources": _dataset_sources(wildcards.dataset)})


def gan_config(wildcards):
    """What a GAN training job reads: its own section and its dataset's (labels, resolution)."""
    spec = config["gans"][wildcards.gan]
    ds = {k: v for k, v in config["datasets"][spec["dataset"]].items() if k != "federated"}
    return rule_config({"gans": {wildcards.gan: spec}, "datasets": {spec["dataset"]: ds},
                        "sources": _dataset_sources(spec["dataset"])})


def gan_data(wildcards):
    dataset = config["gans"][wildcards.gan]["dataset"]
    return {"lmdb": f"results/data/{dataset}/lmdb", "manifest": f"results/data/{dataset}/manifest.csv"}


def gan_outputs():
    return [f"results/gan/{name}/network-final.pt" for name in GANS]


def dataset_inputs(wildcards):
    """The raw files of every source a dataset reads (the demo archives when they are the sources)."""
    return sorted({str(p) for name, spec in _dataset_sources(wildcards.dataset).items()
                   for p in required_files(name, spec)})


def data_outputs():
    outputs = []
    for name in DATASETS:
        outputs += [f"results/data/{name}/manifest.csv", f"results/data/{name}/preview.png"]
    outputs += [f"results/data/{name}/federated.csv" for name in FEDERATED]
    return outputs
