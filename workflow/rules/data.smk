# Data stage: demo archives (when used) → ingest into LMDB shards → splits → federated split.
# Its paths, lists and input functions: helpers/data.smk.

include: "helpers/data.smk"

from dermsynth.data.options import DemoArchivesOptions, FederatedSplitOptions, IngestOptions, SplitOptions


rule demo_archives:
    output:
        DEMO_FILES,
        [directory(d) for d in DEMO_FOLDERS],
    params:
        options=step_options(DemoArchivesOptions),
    log:
        "logs/data/demo_archives.log",
    benchmark:
        "benchmarks/data/demo_archives.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: 2
    resources:
        mem_mb=3000,
        runtime=30,
    shell:
        "dermsynth data demo --options {params.options} --workers {threads} > {log} 2>&1"


rule ingest:
    input:
        dataset_inputs,
    output:
        lmdb=directory(DATASET_LMDB),
        ingested=DATASET_INGESTED,
        rejections=report("results/data/{dataset}/rejections.csv", caption="../report/data_rejections.rst",
                          category="1. Data", subcategory="{dataset}",
                          labels={"dataset": "{dataset}", "result": "images not ingested, and why"}),
        report="results/data/{dataset}/ingest.json",
    params:
        options=step_options(IngestOptions),
        out=subpath(output.ingested, parent=True),
    log:
        "logs/data/ingest/{dataset}.log",
    benchmark:
        "benchmarks/data/ingest/{dataset}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: config["ingest"]["workers"]
    resources:
        mem_mb=lambda wc, threads: 1500 + 800 * threads,
        runtime=lambda wc, attempt: 60 * attempt,
    shell:
        "dermsynth data ingest --options {params.options} --out {params.out} --workers {threads} > {log} 2>&1"


rule split:
    input:
        ingested=DATASET_INGESTED,
    output:
        manifest=DATASET_MANIFEST,
        summary="results/data/{dataset}/splits.json",
    params:
        options=step_options(SplitOptions),
    log:
        "logs/data/split/{dataset}.log",
    benchmark:
        "benchmarks/data/split/{dataset}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: 1
    resources:
        **SMALL_JOB,
    shell:
        "dermsynth data split --options {params.options} --ingested {input.ingested} --manifest {output.manifest} "
        "--summary {output.summary} > {log} 2>&1"


rule federated_split:
    input:
        manifest=DATASET_MANIFEST,
    output:
        assignment=DATASET_FEDERATED,
        summary="results/data/{dataset}/federated.json",
    params:
        options=step_options(FederatedSplitOptions),
    log:
        "logs/data/federated_split/{dataset}.log",
    benchmark:
        "benchmarks/data/federated_split/{dataset}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: 1
    resources:
        **SMALL_JOB,
    shell:
        "dermsynth data federated-split --options {params.options} --manifest {input.manifest} "
        "--out {output.assignment} --summary {output.summary} > {log} 2>&1"


rule preview:
    input:
        lmdb=DATASET_LMDB,
        manifest=DATASET_MANIFEST,
    output:
        report(DATASET_PREVIEW, caption="../report/data_preview.rst", category="1. Data",
               subcategory="{dataset}", labels={"dataset": "{dataset}", "result": "images per class"}),
    log:
        "logs/data/preview/{dataset}.log",
    benchmark:
        "benchmarks/data/preview/{dataset}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: 1
    resources:
        **SMALL_JOB,
    shell:
        "dermsynth data preview --lmdb {input.lmdb} --manifest {input.manifest} --out {output} > {log} 2>&1"
