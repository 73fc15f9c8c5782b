# Classifier stage: one model per (study, scenario, architecture), evaluated on the real test split,
# and the studies' tables. HAM10000: baseline, SA-n (unfiltered; also predicts its synthetic images)
# and SA-n-filter (its synthetic set minus what the unfiltered model misclassifies). ISIC: baseline,
# <family>-synth (synthetic only, balanced), <family>-aug (real + synthetic malignant) and aug-edge (real +
# neighbours of the validation edge cases and baseline mistakes).
# Its paths, lists and input functions: helpers/classify.smk.

include: "helpers/classify.smk"

from dermsynth import scenarios
from dermsynth.classify.options import (EdgeNeighboursOptions, IsicEdgeTableOptions, IsicSyntheticOptions,
                                      TrainClassifierOptions)


rule isic_synthetic:
    input:
        unpack(isic_synthetic_networks),
    output:
        directory(ISIC_SYNTHETIC),
    wildcard_constraints:
        kind="|".join(scenarios.ISIC_SET_KINDS),
    params:
        options=step_options(IsicSyntheticOptions),
        networks=lambda wc, input: " ".join(f"--network {name}={path}" for name, path in input.items()),
    log:
        "logs/synthetic/isic/{family}-{kind}.log",
    benchmark:
        "benchmarks/synthetic/isic/{family}-{kind}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: gpu_threads(ISIC)
    resources:
        # generation is short: 2 hours and 8000 MB per attempt, whatever the classifiers' runtime_hours
        **gpu_resources({"gpus": ISIC["gpus"], "runtime_hours": 2}, cpu_mem_mb=8000, gpu_mem_mb=8000),
    shell:
        "dermsynth classify isic-synthetic --options {params.options} {params.networks} --out {output} > {log} 2>&1"


rule classifier_sa:
    """Unfiltered SA-n model: also predicts its own synthetic images (the filter's input)."""
    input:
        unpack(classifier_inputs),
    output:
        **classifier_files(),
        synthetic=CLASSIFIER_SYNTHETIC,
    wildcard_constraints:
        study="ham10000",
        scenario=SA_PATTERN,
    params:
        **classifier_params(TrainClassifierOptions),
        predict="--predict-synthetic",
    log:
        "logs/classifiers/{study}/{scenario}/{arch}.log",
    benchmark:
        "benchmarks/classifiers/{study}/{scenario}/{arch}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: gpu_threads(classifier_section)
    resources:
        **gpu_resources(classifier_section),
    shell:
        "dermsynth classify train --options {params.options} --lmdb {input.lmdb} --manifest {input.manifest} "
        "{params.extra} {params.predict} --data-source {params.source:q} --out {params.out} --threads {threads} "
        "> {log} 2>&1"


use rule classifier_sa as classifier with:
    output:
        **classifier_files(),
    wildcard_constraints:
        study="ham10000|isic",
        scenario=OTHER_SCENARIO_PATTERN,
    params:
        **classifier_params(TrainClassifierOptions),
        predict="",


rule filter_synthetic:
    input:
        synthetic="results/synthetic/{synthetic}",
        predictions=lambda wc: CLASSIFIER_SYNTHETIC.format(
            study="ham10000", scenario=scenarios.Scenario.sa(wc.synthetic).name, arch=wc.arch),
    output:
        manifest=FILTERED_MANIFEST,
        summary="results/synthetic/filtered/{arch}/{synthetic}.json",
    params:
        manifest=lambda wc, input: f"{input.synthetic}/manifest.csv",
    log:
        "logs/synthetic/filtered/{arch}/{synthetic}.log",
    conda:
        "../envs/dermsynth.yaml"
    resources:
        **SMALL_JOB,
    shell:
        "dermsynth classify filter-synthetic --manifest {params.manifest} --predictions {input.predictions} "
        "--out {output.manifest} > {log} 2>&1"


rule ham_tables:
    input:
        models=ham_model_outputs,
    output:
        table2=report("results/tables/table2.csv", caption="../report/table2.rst", category="5. Classifiers",
                      subcategory="HAM10000 study, Tables 2 and 3", labels={"table": "Table 2: balanced accuracy"}),
        table3=report("results/tables/table3.csv", caption="../report/table3.rst", category="5. Classifiers",
                      subcategory="HAM10000 study, Tables 2 and 3", labels={"table": "Table 3: AUC per class"}),
        figures=report(expand("results/figures/recall-per-class-{arch}.png", arch=HAM_ARCHITECTURES),
                       caption="../report/recall.rst", category="5. Classifiers",
                       subcategory="HAM10000 study, recall per class"),
    params:
        models=model_folders,
        sizes=" ".join(HAM_SIZES),
        figures=lambda wc, output: str(Path(output.figures[0]).parent),
    log:
        "logs/tables/table2.log",
    conda:
        "../envs/dermsynth.yaml"
    resources:
        **SMALL_JOB,
    shell:
        "dermsynth classify tables --models {params.models} --sizes {params.sizes} --table2 {output.table2} "
        "--table3 {output.table3} --figures {params.figures} > {log} 2>&1"


rule isic_table2:
    input:
        models=isic_model_outputs,
    output:
        report("results/tables/isic_table2.csv", caption="../report/isic_table2.rst", category="5. Classifiers",
               subcategory="ISIC study, Table 2"),
    params:
        models=model_folders,
    log:
        "logs/tables/isic_table2.log",
    conda:
        "../envs/dermsynth.yaml"
    resources:
        **SMALL_JOB,
    shell:
        "dermsynth classify isic-table2 --models {params.models} --out {output} > {log} 2>&1"


# Scenario aug-edge (ISIC study, section 5): neighbours in W of the projected validation edge cases and baseline
# mistakes, added to the real training images; every ISIC model on the test edge cases and the baseline's test mistakes.
rule edge_neighbours:
    input:
        unpack(edge_neighbour_inputs),
    output:
        directory(EDGE_SET),
    params:
        options=step_options(EdgeNeighboursOptions),
        classifier=lambda wc, input: str(Path(input.classifier[0]).parent),
        baseline=lambda wc, input: str(Path(input.baseline[0]).parent),
    log:
        "logs/synthetic/isic/edge-neighbours.log",
    benchmark:
        "benchmarks/synthetic/isic/edge-neighbours.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: gpu_threads(EDGE)
    resources:
        **gpu_resources(EDGE, cpu_mem_mb=8000, gpu_mem_mb=8000),
    shell:
        "dermsynth classify edge-neighbours --options {params.options} --network {input.network} --lmdb {input.lmdb} "
        "--manifest {input.manifest} --classifier {params.classifier} --baseline {params.baseline} --out {output} "
        "--threads {threads} > {log} 2>&1"


rule isic_edge_table:
    input:
        unpack(edge_models),
        models=isic_model_outputs,
        edge_set=EDGE_SET,
        manifest=dataset_files(ISIC["dataset"])["manifest"] if AUG_EDGE else [],
    output:
        table=report(ISIC_EDGE_TABLE, caption="../report/isic_table2_edge.rst", category="5. Classifiers",
                     subcategory="ISIC study, Table 2"),
        summary=Path(ISIC_EDGE_TABLE).with_suffix(".json").as_posix(),
    params:
        options=step_options(IsicEdgeTableOptions),
        models=model_folders,
        classifier=lambda wc, input: str(Path(input.classifier[0]).parent),
        baseline=lambda wc, input: str(Path(input.baseline[0]).parent),
        edge_manifest=lambda wc, input: f"{input.edge_set}/manifest.csv",
    log:
        "logs/tables/isic_table2_edge.log",
    conda:
        "../envs/dermsynth.yaml"
    resources:
        **SMALL_JOB,
    shell:
        "dermsynth classify isic-edge-table --options {params.options} --models {params.models} "
        "--classifier {params.classifier} --baseline {params.baseline} --edge-set {params.edge_manifest} "
        "--manifest {input.manifest} --out {output.table} > {log} 2>&1"
