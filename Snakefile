# dermsynth: raw dermoscopy archives → LMDB → StyleGAN2 → latent transformations → synthetic data
# → classifiers → the studies' tables. Every rule runs one `dermsynth <verb>` command.
#
#   snakemake --cores 2                     # everything, on the config's data (demo by default)
#   snakemake -n results/data/isic/manifest.csv   # what would run for one target
#   snakemake -n --configfile my.yaml       # your own config: replaces config/config.yaml (the demo)

from snakemake.utils import min_version

min_version("9.0")


# The demo config is the default, not a base: a config given with `--configfile` (or by a profile's
# `configfile:`) replaces it, so a user's config holds exactly the datasets and generators it names.
# `--config key=value` applies on top of either.
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


localrules:
    all,
    lite0_weights,
    isic_table1,
    lpips_table,
    filter_synthetic,
    ham_tables,
    isic_table2,
    isic_edge_table,
    isic_frames,
    federated_table,


wildcard_constraints:
    arch="[^/]+",
    gan="[^/]+",
    family="[^/]+",


# common.smk validates the config and holds the helpers every stage uses; each stage's rule file includes its own
# paths, lists and input functions (workflow/rules/helpers/<stage>.smk) and may read what an earlier stage defines
# (a path a later stage reads is defined by the stage that writes it), so the order is the stages' order.
include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/gan.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/latent.smk"
include: "workflow/rules/federated.smk"
include: "workflow/rules/classify.smk"
include: "workflow/rules/explain.smk"


rule all:
    input:
        data_outputs(),
        gan_outputs(),
        federated_outputs(),
        metrics_outputs(),
        latent_outputs(),
        classifier_outputs(),
        explain_outputs(),
    default_target: True
