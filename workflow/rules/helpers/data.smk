# The data stage's paths, lists and input functions; its rules are in ../data.smk, which includes
# this file first (snakemake --lint wants functions apart from rules).
# Owns: the datasets (`DATASETS`, `FEDERATED`), the demo archives' files, the archives not found (said at planning),
# the dataset paths every later stage reads (`DATASET_LMDB`, `DATASET_MANIFEST`, `DATASET_FEDERATED`, …),
# `dataset_files` and `data_source` (the LMDB + manifest of a dataset, and the data line of a table), `data_outputs`.

from dermsynth.data.archives import missing_archives
from dermsynth.data.demo.layout import expected_outputs as demo_expected_outputs
from dermsynth.data.sources import required_files

DATASETS = list(config["datasets"])
FEDERATED = [name for name, ds in config["datasets"].items() if "federated" in ds]

DEMO_FILES, DEMO_FOLDERS = demo_expected_outputs(config["demo"])
# Archives the config points at that are not there (and that no rule writes, as the demo rule writes the
# demo's): one message per source, before Snakemake lists the ingest jobs' missing inputs. A warning, not
# an error: targets that do not read those sources still run.
MISSING_ARCHIVES = missing_archives(config, DEMO_FILES, DEMO_FOLDERS, CONFIG_FILES)
if MISSING_ARCHIVES:
    print(f"dermsynth: {len(MISSING_ARCHIVES)} configured source(s) not found; the ingest jobs that read them "
          "cannot run:", file=sys.stderr)
    for message in MISSING_ARCHIVES:
        print(f"  - {message}", file=sys.stderr)

# The data stage's outputs (the LMDB and manifest are read by every later stage).
DATASET_LMDB = "results/data/{dataset}/lmdb"
DATASET_MANIFEST = "results/data/{dataset}/manifest.csv"
DATASET_INGESTED = "results/data/{dataset}/ingested.csv"
DATASET_PREVIEW = "results/data/{dataset}/preview.png"
DATASET_FEDERATED = "results/data/{dataset}/federated.csv"


def dataset_files(dataset):
    """The LMDB store and manifest of an ingested, split dataset (the inputs most verbs read)."""
    return {"lmdb": DATASET_LMDB.format(dataset=dataset), "manifest": DATASET_MANIFEST.format(dataset=dataset)}


def _dataset_sources(name):
    return {e["source"]: config["sources"][e["source"]] for e in config["datasets"][name]["sources"]}


def data_source(dataset):
    """'demo archives' when every source of the dataset is the embedded demo, else the source paths."""
    demo = str(Path(config["demo"]["output"]))
    paths = [spec["path"] for spec in _dataset_sources(dataset).values()]
    if all(str(Path(p)).startswith(demo) for p in paths):
        return "demo archives (procedural images, not real lesions)"
    return "archives: " + ", ".join(paths)


def dataset_inputs(wildcards):
    """The raw files of every source a dataset reads (the demo archives when they are the sources)."""
    return sorted({str(p) for name, spec in _dataset_sources(wildcards.dataset).items()
                   for p in required_files(name, spec)})


def data_outputs():
    """The data stage's targets: each dataset's manifest and preview, and the hospitals of federated ones."""
    outputs = []
    for name in DATASETS:
        outputs += [DATASET_MANIFEST.format(dataset=name), DATASET_PREVIEW.format(dataset=name)]
    return outputs + [DATASET_FEDERATED.format(dataset=name) for name in FEDERATED]
