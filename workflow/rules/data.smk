# Data stage: demo archives (when used) → ingest into LMDB shards → splits → federated split.


rule demo_archives:
    output:
        DEMO_FILES,
        [directory(d) for d in DEMO_FOLDERS],
    params:
        config=rule_config({"demo": config["demo"]}),
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
        "dermsynth demo-archives --config {params.config} --workers {threads} > {log} 2>&1"


rule ingest:
    input:
        dataset_inputs,
    output:
        lmdb=directory("results/data/{dataset}/lmdb"),
        ingested="results/data/{dataset}/ingested.csv",
        rejections=report("results/data/{dataset}/rejections.csv", caption="../report/data_rejections.rst",
                          category="1. Data", subcategory="{dataset}",
                          labels={"dataset": "{dataset}", "result": "images not ingested, and why"}),
        report="results/data/{dataset}/ingest.json",
    params:
        config=ingest_config,
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
        "dermsynth ingest --config {params.config} --dataset {wildcards.dataset} "
        "--out {params.out} --workers {threads} > {log} 2>&1"


rule split:
    input:
        ingested="results/data/{dataset}/ingested.csv",
    output:
        manifest="results/data/{dataset}/manifest.csv",
        summary="results/data/{dataset}/splits.json",
    params:
        config=split_config,
    log:
        "logs/data/split/{dataset}.log",
    benchmark:
        "benchmarks/data/split/{dataset}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    shell:
        "dermsynth split --config {params.config} --dataset {wildcards.dataset} --ingested {input.ingested} "
        "--manifest {output.manifest} --summary {output.summary} > {log} 2>&1"


rule federated_split:
    input:
        manifest="results/data/{dataset}/manifest.csv",
    output:
        assignment="results/data/{dataset}/federated.csv",
        summary="results/data/{dataset}/federated.json",
    params:
        config=federated_config,
    log:
        "logs/data/federated_split/{dataset}.log",
    benchmark:
        "benchmarks/data/federated_split/{dataset}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    shell:
        "dermsynth federated-split --config {params.config} --dataset {wildcards.dataset} "
        "--manifest {input.manifest} --out {output.assignment} --summary {output.summary} > {log} 2>&1"


rule preview:
    input:
        lmdb="results/data/{dataset}/lmdb",
        manifest="results/data/{dataset}/manifest.csv",
    output:
        report("results/data/{dataset}/preview.png", caption="../report/data_preview.rst", category="1. Data",
               subcategory="{dataset}", labels={"dataset": "{dataset}", "result": "images per class"}),
    log:
        "logs/data/preview/{dataset}.log",
    benchmark:
        "benchmarks/data/preview/{dataset}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "dermsynth preview --lmdb {input.lmdb} --manifest {input.manifest} --out {output} > {log} 2>&1"
