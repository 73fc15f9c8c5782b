# The classify stage's paths, lists and input functions; its rules are in ../classify.smk, which includes
# this file first (snakemake --lint wants functions apart from rules).
# Owns: the scenarios each study trains (named and parsed by dermsynth.scenarios only), the classifier paths later
# stages read (`CLASSIFIER_*`, `_model_files`, `model_folders`), the synthetic sets only classifiers read (ISIC
# sets, aug-edge's neighbours; `FRAMELESS_SET`, which explain.smk's frameless_set writes), aug-edge's classifier,
# `classifier_outputs`.

from dermsynth import scenarios

HAM = config["classifiers"]["ham10000"]
ISIC = config["classifiers"]["isic"]
HAM_ARCHITECTURES = HAM["architectures"]
HAM_SIZES = scenarios.ham_sizes(config)  # the SA sets the HAM10000 models train with
HAM_SCENARIOS = scenarios.scenario_names(config, "ham10000")
ISIC_SCENARIOS = scenarios.scenario_names(config, "isic")
# ISIC scenario aug-edge (classifiers.isic.edge): real images + neighbours of the validation edge cases and mistakes
EDGE = ISIC["edge"]
AUG_EDGE = scenarios.Scenario(scenarios.EDGE).name in ISIC_SCENARIOS
# ISIC scenario frameless-synth (explain.frames; ISIC study §4.3): trained on the frameless set alone
FRAMELESS_SYNTH = scenarios.Scenario(scenarios.FRAMELESS).name in ISIC_SCENARIOS
# rule classifier_sa trains the unfiltered SA-n models (they also predict their synthetic set), rule classifier
# every other scenario of both studies
SA_PATTERN = one_of([scenarios.Scenario.sa(size).name for size in HAM_SIZES], none="no-synthetic-sets")
OTHER_SCENARIO_PATTERN = one_of(dict.fromkeys(name for name in HAM_SCENARIOS + ISIC_SCENARIOS
                                              if scenarios.parse(name).kind != scenarios.SA), none="no-scenarios")

# Classifier outputs that other rules read (one model folder per study, scenario, architecture), and the
# synthetic sets only classifiers read.
CLASSIFIER_METRICS = "results/classifiers/{study}/{scenario}/{arch}/metrics.json"
CLASSIFIER_TEST = "results/classifiers/{study}/{scenario}/{arch}/predictions-test.csv"
CLASSIFIER_VALIDATION = "results/classifiers/{study}/{scenario}/{arch}/predictions-validation.csv"
CLASSIFIER_SYNTHETIC = "results/classifiers/{study}/{scenario}/{arch}/predictions-synthetic.csv"
CLASSIFIER_CONFUSION = "results/classifiers/{study}/{scenario}/{arch}/confusion.png"
FILTERED_MANIFEST = "results/synthetic/filtered/{arch}/{synthetic}.csv"
ISIC_SYNTHETIC = "results/synthetic/isic/{family}-{kind}"
EDGE_SET = "results/synthetic/isic/edge-neighbours"
FRAMELESS_SET = "results/synthetic/frameless"
ISIC_EDGE_TABLE = "results/tables/isic_table2_edge.csv"
# aug-edge's sources and the test subsets it is reported on: edge cases by the authenticity stage's classifier (unless
# classifiers.isic.edge names another), mistakes by the baseline of the same architecture (checked by validate_config)
EDGE_CLASSIFIER = scenarios.edge_classifier(config)


def isic_synthetic_networks(wildcards):
    """The generator of each class an ISIC set holds (synth: benign and malignant; aug: malignant)."""
    generators = ISIC["generators"][wildcards.family]
    classes = ["benign", "malignant"] if wildcards.kind == scenarios.SYNTH else ["malignant"]
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


def synthetic_inputs(scenario, arch):
    """The synthetic set a scenario adds (and the SA-n-filter model's filtered manifest); none for the baseline."""
    if scenario.kind in (scenarios.SA, scenarios.SA_FILTER):
        filtered = scenario.kind == scenarios.SA_FILTER
        return {"synthetic": SYNTHETIC_SET.format(name=scenario.size),
                **({"filtered": FILTERED_MANIFEST.format(arch=arch, synthetic=scenario.size)} if filtered else {})}
    if scenario.kind in scenarios.ISIC_SET_KINDS:
        return {"synthetic": ISIC_SYNTHETIC.format(family=scenario.family, kind=scenario.kind)}
    sets = {scenarios.EDGE: EDGE_SET, scenarios.FRAMELESS: FRAMELESS_SET}
    return {"synthetic": sets[scenario.kind]} if scenario.kind in sets else {}


def classifier_inputs(wildcards):
    """The study's dataset, the Lite0 weights, and the scenario's synthetic set (and filtered manifest)."""
    scenario = scenarios.parse(wildcards.scenario, wildcards.study)
    return {**dataset_files(config["classifiers"][wildcards.study]["dataset"]), "lite0_weights": LITE0_WEIGHTS,
            **synthetic_inputs(scenario, wildcards.arch)}


def classifier_arguments(wildcards, input):
    if "synthetic" not in input.keys():
        return ""
    manifest = input.filtered if "filtered" in input.keys() else f"{input.synthetic}/manifest.csv"
    args = f"--synthetic-lmdb {input.synthetic}/lmdb --synthetic-manifest {manifest}"
    return args + (" --no-real-train" if scenarios.parse(wildcards.scenario).synthetic_only else "")


def _model_files(study, scenario_names, architectures):
    return [pattern.format(study=study, scenario=s, arch=a) for s in scenario_names for a in architectures
            for pattern in (CLASSIFIER_METRICS, CLASSIFIER_TEST, CLASSIFIER_VALIDATION)]


def ham_model_outputs(wildcards):
    return _model_files("ham10000", HAM_SCENARIOS, HAM_ARCHITECTURES)


def isic_model_outputs(wildcards):
    return _model_files("isic", ISIC_SCENARIOS, ISIC["architectures"])


def model_folders(wildcards, input):
    """The model folders of a rule's `models` input (its metrics.json and predictions files)."""
    return sorted({str(Path(f).parent) for f in input.models})


def edge_models(wildcards=None):
    """The edge classifier's and the baseline's model files (metrics.json and predictions) for aug-edge."""
    scenario, arch = EDGE_CLASSIFIER
    baseline = scenarios.Scenario(scenarios.BASELINE).name
    return {"classifier": _model_files("isic", [scenario], [arch]),
            "baseline": _model_files("isic", [baseline], [arch])}


def edge_neighbour_inputs(wildcards):
    """What edge_neighbours reads: the generator, the ISIC dataset, the two classifiers' validation predictions."""
    return {**dataset_files(ISIC["dataset"]), "network": network(EDGE["gan"]), **edge_models()}


def classifier_outputs():
    outputs = ["results/tables/table2.csv"] if HAM_SIZES else []
    return outputs + (["results/tables/isic_table2.csv"] if ISIC_SCENARIOS else []) + \
        ([ISIC_EDGE_TABLE] if AUG_EDGE else [])
