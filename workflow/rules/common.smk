# Shared set-up: validate the config (a wrong key stops here, named), and hand the rules a
# frozen copy of it. Rules pass that copy to `dermsynth` and list the config section they depend
# on under `params:`, so that changing one section re-runs only the rules that read it.

import hashlib
import json
from pathlib import Path

import yaml

from dermsynth.config import validate_config
from dermsynth.data.demo.archives import expected_outputs as demo_expected_outputs
from dermsynth.data.sources import required_files

config = validate_config(config, origin="the workflow config (config/config.yaml + --config)")


def _frozen_config_file(cfg):
    """Write the validated config once per distinct content; its path is never a rule input."""
    text = yaml.safe_dump(cfg, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    path = Path(".snakemake") / "dermsynth-config" / f"config-{digest}.yaml"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return str(path)


CONFIG_FILE = _frozen_config_file(config)
DEMO_FILES, DEMO_FOLDERS = demo_expected_outputs(config["demo"])
DATASETS = list(config["datasets"])
FEDERATED = [name for name, ds in config["datasets"].items() if "federated" in ds]


def dataset_inputs(wildcards):
    """The raw files of every source a dataset reads (the demo archives when they are the sources)."""
    files = []
    for entry in config["datasets"][wildcards.dataset]["sources"]:
        name = entry["source"]
        files += [str(p) for p in required_files(name, config["sources"][name])]
    return sorted(set(files))


def ingest_params(wildcards):
    ds = config["datasets"][wildcards.dataset]
    used = [e["source"] for e in ds["sources"]]
    section = {
        "labels": ds["labels"],
        "resolution": ds["resolution"],
        "sources": ds["sources"],
        "source_specs": {n: config["sources"][n] for n in used},
        "ingest": {k: v for k, v in config["ingest"].items() if k not in ("workers",)},
    }
    return json.dumps(section, sort_keys=True)


def data_outputs():
    outputs = []
    for name in DATASETS:
        outputs += [f"results/data/{name}/manifest.csv", f"results/data/{name}/preview.png"]
    outputs += [f"results/data/{name}/federated.csv" for name in FEDERATED]
    return outputs
