# Classifier stage: one model per (study, scenario, architecture), evaluated on the real test split,
# and the studies' tables. HAM10000: baseline, SA-n (unfiltered; also predicts its synthetic images)
# and SA-n-filter (its synthetic set minus what the unfiltered model misclassifies). ISIC: baseline,
# <family>-synth (synthetic only, balanced) and <family>-aug (real + synthetic malignant).


rule isic_synthetic:
    input:
        unpack(isic_synthetic_networks),
    output:
        directory("results/synthetic/isic/{family}-{kind}"),
    wildcard_constraints:
        kind="synth|aug",
    params:
        config=isic_synthetic_config,
        networks=lambda wc, input: " ".join(f"--network {name}={path}" for name, path in input.items()),
    log:
        "logs/synthetic/isic/{family}-{kind}.log",
    benchmark:
        "benchmarks/synthetic/isic/{family}-{kind}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: lambda wc: 8 if config["classifiers"]["isic"]["gpus"] else 1
    resources:
        gpu=config["classifiers"]["isic"]["gpus"],
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=lambda wc, attempt: 120 * attempt,
    shell:
        "dermsynth isic-synthetic --config {params.config} --family {wildcards.family} --kind {wildcards.kind} "
        "{params.networks} --out {output} > {log} 2>&1"


rule classifier_sa:
    """Unfiltered SA-n model: also predicts its own synthetic images (the filter's input)."""
    input:
        unpack(classifier_inputs),
    output:
        metrics="results/classifiers/{study}/{scenario}/{arch}/metrics.json",
        test="results/classifiers/{study}/{scenario}/{arch}/predictions-test.csv",
        validation="results/classifiers/{study}/{scenario}/{arch}/predictions-validation.csv",
        confusion=report("results/classifiers/{study}/{scenario}/{arch}/confusion.png", caption="../report/confusion.rst",
                         category="5. Classifiers", subcategory="{study}: confusion matrices",
                         labels={"scenario": "{scenario}", "architecture": "{arch}"}),
        synthetic="results/classifiers/{study}/{scenario}/{arch}/predictions-synthetic.csv",
    wildcard_constraints:
        study="ham10000",
        scenario=SA_PATTERN,
    params:
        config=classifier_config,
        extra=classifier_arguments,
        source=lambda wc: data_source(config["classifiers"][wc.study]["dataset"]),
        predict="--predict-synthetic",
    log:
        "logs/classifiers/{study}/{scenario}/{arch}.log",
    benchmark:
        "benchmarks/classifiers/{study}/{scenario}/{arch}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: classifier_threads
    resources:
        gpu=lambda wc: config["classifiers"][wc.study]["gpus"],
        mem_mb=lambda wc, attempt: 16000 * attempt,
        runtime=lambda wc, attempt: int(config["classifiers"][wc.study]["runtime_hours"] * 60 * attempt),
    shell:
        "dermsynth train-classifier --config {params.config} --study {wildcards.study} --scenario {wildcards.scenario} "
        "--architecture {wildcards.arch} --lmdb {input.lmdb} --manifest {input.manifest} {params.extra} "
        "{params.predict} --data-source {params.source:q} --out $(dirname {output.metrics}) --threads {threads} "
        "> {log} 2>&1"


use rule classifier_sa as classifier with:
    output:
        metrics="results/classifiers/{study}/{scenario}/{arch}/metrics.json",
        test="results/classifiers/{study}/{scenario}/{arch}/predictions-test.csv",
        validation="results/classifiers/{study}/{scenario}/{arch}/predictions-validation.csv",
        confusion=report("results/classifiers/{study}/{scenario}/{arch}/confusion.png", caption="../report/confusion.rst",
                         category="5. Classifiers", subcategory="{study}: confusion matrices",
                         labels={"scenario": "{scenario}", "architecture": "{arch}"}),
    wildcard_constraints:
        study="ham10000|isic",
        scenario=OTHER_SCENARIO_PATTERN,
    params:
        config=classifier_config,
        extra=classifier_arguments,
        source=lambda wc: data_source(config["classifiers"][wc.study]["dataset"]),
        predict="",


rule filter_synthetic:
    input:
        synthetic="results/synthetic/{synthetic}",
        predictions="results/classifiers/ham10000/{synthetic}/{arch}/predictions-synthetic.csv",
    output:
        manifest="results/synthetic/filtered/{arch}/{synthetic}.csv",
        summary="results/synthetic/filtered/{arch}/{synthetic}.json",
    log:
        "logs/synthetic/filtered/{arch}/{synthetic}.log",
    conda:
        "../envs/dermsynth.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "dermsynth filter-synthetic --manifest {input.synthetic}/manifest.csv --predictions {input.predictions} "
        "--out {output.manifest} > {log} 2>&1"


rule ham_tables:
    input:
        ham_model_outputs,
    output:
        table2=report("results/tables/table2.csv", caption="../report/table2.rst", category="5. Classifiers",
                      subcategory="HAM10000 study, Tables 2 and 3", labels={"table": "Table 2: balanced accuracy"}),
        table3=report("results/tables/table3.csv", caption="../report/table3.rst", category="5. Classifiers",
                      subcategory="HAM10000 study, Tables 2 and 3", labels={"table": "Table 3: AUC per class"}),
        figures=report(expand("results/figures/recall-per-class-{arch}.png", arch=HAM_ARCHITECTURES),
                       caption="../report/recall.rst", category="5. Classifiers",
                       subcategory="HAM10000 study, recall per class"),
    params:
        models=lambda wc, input: sorted({str(Path(f).parent) for f in input}),
        sizes=" ".join(HAM_SIZES),
    log:
        "logs/tables/table2.log",
    conda:
        "../envs/dermsynth.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "dermsynth classifier-tables --models {params.models} --sizes {params.sizes} --table2 {output.table2} "
        "--table3 {output.table3} --figures results/figures > {log} 2>&1"


rule isic_table2:
    input:
        isic_model_outputs,
    output:
        report("results/tables/isic_table2.csv", caption="../report/isic_table2.rst", category="5. Classifiers",
               subcategory="ISIC study, Table 2"),
    params:
        models=lambda wc, input: sorted({str(Path(f).parent) for f in input}),
    log:
        "logs/tables/isic_table2.log",
    conda:
        "../envs/dermsynth.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "dermsynth isic-table2 --models {params.models} --out {output} > {log} 2>&1"
