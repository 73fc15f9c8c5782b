# The explain stage's paths, lists and input functions; its rules are in ../explain.smk, which includes
# this file first (snakemake --lint wants functions apart from rules).
# Owns: the authenticity stage's generators and classifier, the CRP/PCX architectures and concept caches, frame
# removal's paths and inputs (the frameless set's path is `FRAMELESS_SET` of helpers/classify.smk: a classifier reads it),
# `explain_outputs`.

from dermsynth import scenarios

AUTHENTICITY = config["explain"]["authenticity"]
# (scenario, architecture) of the ISIC classifier that embeds the images (checked by validate_config)
AUTHENTICITY_CLASSIFIER = scenarios.authenticity_classifier(config)


def authenticity_inputs(wildcards):
    scenario, arch = AUTHENTICITY_CLASSIFIER
    return {**gan_data(wildcards), "network": network(wildcards.gan),
            "projection": PROJECTION.format(gan=wildcards.gan),
            "classifier": CLASSIFIER_METRICS.format(study="isic", scenario=scenario, arch=arch)}


# CRP and PCX (HAM10000 study, Fig. 7, App. B-D): per HAM10000 architecture, its baseline and best filtered SA model.
CRP = config["explain"]["crp"]
CRP_ARCHITECTURES = HAM_ARCHITECTURES if CRP["enabled"] and HAM["filtered"] and HAM_SIZES else []
# the concept relevances CRP caches per model and PCX reads
CRP_CONCEPTS_BASELINE = "results/explain/crp/{arch}/concepts-baseline.npz"
CRP_CONCEPTS_AUGMENTED = "results/explain/crp/{arch}/concepts-augmented.npz"


def explained_models(wildcards):
    """The architecture's HAM10000 models (baseline, SA-n, SA-n-filter) and the classifiers' dataset."""
    return {**dataset_files(HAM["dataset"]), "models": _model_files("ham10000", HAM_SCENARIOS, [wildcards.arch])}


def crp_pcx_outputs():
    return [f"results/explain/{kind}/{arch}/{kind}.json" for arch in CRP_ARCHITECTURES for kind in ("crp", "pcx")]


# Frame removal (explain.frames; ISIC study §4.3, Fig. 5): the directions of explain.frames.gan, the frameless set
# (FRAMELESS_SET), and every ISIC classifier's accuracy with and without frames.
FRAMES = config["explain"]["frames"]
FRAMES_GAN = FRAMES["gan"]
FRAME_DIRECTIONS = "results/explain/frames/{gan}/directions.csv"
FRAME_PROPOSAL = "results/explain/frames/{gan}/proposal.yaml"
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
    return [FRAME_DIRECTIONS.format(gan=FRAMES_GAN), FRAMELESS_SET] + ([FRAME_ACCURACY] if FRAMELESS_SYNTH else [])


def explain_outputs():
    return [f"results/explain/{gan}/{name}" for gan in AUTHENTICITY["gans"]
            for name in ("authenticity.json", "tsne.png")] + crp_pcx_outputs() + frames_outputs()
