# Latent-space stage: SeFa directions per generator and layer range, with preview grids to name them;
# projection; e4e + HyperStyle inversion; the named transformations and Table 1; the SA-n synthetic sets.
# Its paths, lists and input functions: helpers/latent.smk.

include: "helpers/latent.smk"

from dermsynth.latent.options import (InvertOptions, ProjectOptions, SefaOptions, TrainE4eOptions,
                                      TrainHyperstyleOptions, TransformOptions)
from dermsynth.synthetic.options import SyntheticDatasetOptions


rule sefa:
    input:
        network=NETWORK,
    output:
        directions=SEFA,
        summary="results/latent/{gan}/sefa-{layers}.json",
        preview=report("results/latent/{gan}/sefa-{layers}.png", caption="../report/sefa.rst",
                       category="4. Latent space", subcategory="{gan}",
                       labels={"generator": "{gan}", "result": "SeFa directions, {layers} layers"}),
    wildcard_constraints:
        layers="all|coarse|middle|fine",
    params:
        options=step_options(SefaOptions),
    log:
        "logs/latent/sefa/{gan}-{layers}.log",
    benchmark:
        "benchmarks/latent/sefa/{gan}-{layers}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "dermsynth latent sefa --options {params.options} --network {input.network} --out {output.directions} "
        "--preview {output.preview} > {log} 2>&1"


rule project:
    input:
        unpack(gan_data),
        network=NETWORK,
    output:
        latents=PROJECTION,
        report="results/latent/{gan}/projection.json",
        preview=report("results/latent/{gan}/projection.png", caption="../report/projection.rst",
                       category="4. Latent space", subcategory="{gan}",
                       labels={"generator": "{gan}", "result": "projection into W"}),
    params:
        options=step_options(ProjectOptions),
    log:
        "logs/latent/project/{gan}.log",
    benchmark:
        "benchmarks/latent/project/{gan}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: gpu_threads(config["latent"]["projection"])
    resources:
        **gpu_resources(config["latent"]["projection"]),
    shell:
        "dermsynth latent project --options {params.options} --network {input.network} "
        "--lmdb {input.lmdb} --manifest {input.manifest} --out {output.latents} --preview {output.preview} "
        "--threads {threads} > {log} 2>&1"


rule train_e4e:
    input:
        unpack(gan_data),
        network=NETWORK,
    output:
        model=E4E,
        report="results/latent/{gan}/e4e.json",
    params:
        options=step_options(TrainE4eOptions),
    log:
        "logs/latent/train_e4e/{gan}.log",
    benchmark:
        "benchmarks/latent/train_e4e/{gan}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: gpu_threads(config["latent"]["e4e"], cpu=2)
    resources:
        **gpu_resources(config["latent"]["e4e"]),
    shell:
        "dermsynth latent train-e4e --options {params.options} --network {input.network} "
        "--lmdb {input.lmdb} --manifest {input.manifest} --out {output.model} --threads {threads} > {log} 2>&1"


rule train_hyperstyle:
    input:
        unpack(gan_data),
        network=NETWORK,
        e4e=E4E,
    output:
        model=HYPERSTYLE,
        report="results/latent/{gan}/hyperstyle.json",
    params:
        options=step_options(TrainHyperstyleOptions),
    log:
        "logs/latent/train_hyperstyle/{gan}.log",
    benchmark:
        "benchmarks/latent/train_hyperstyle/{gan}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: gpu_threads(config["latent"]["hyperstyle"], cpu=2)
    resources:
        **gpu_resources(config["latent"]["hyperstyle"]),
    shell:
        "dermsynth latent train-hyperstyle --options {params.options} --network {input.network} "
        "--e4e {input.e4e} --lmdb {input.lmdb} --manifest {input.manifest} --out {output.model} "
        "--threads {threads} > {log} 2>&1"


rule invert:
    input:
        **dataset_files(config["latent"]["inversion"]["dataset"]),
        network=NETWORK,
        e4e=E4E,
        hyperstyle=HYPERSTYLE,
    output:
        report(directory(INVERSION), patterns=["{figure,[^/]+}.png"], caption="../report/inversion.rst",
               category="4. Latent space", subcategory="{gan}",
               labels={"generator": "{gan}", "result": "inversion: e4e, HyperStyle"}),
    params:
        options=step_options(InvertOptions),
    log:
        "logs/latent/invert/{gan}.log",
    benchmark:
        "benchmarks/latent/invert/{gan}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: gpu_threads(config["latent"]["inversion"], cpu=2)
    resources:
        **gpu_resources(config["latent"]["inversion"]),
    shell:
        "dermsynth latent invert --options {params.options} --network {input.network} "
        "--e4e {input.e4e} --hyperstyle {input.hyperstyle} --lmdb {input.lmdb} --manifest {input.manifest} "
        "--out {output} --threads {threads} > {log} 2>&1"


rule transform:
    input:
        unpack(transform_inputs),
    output:
        report(directory(TRANSFORMED), patterns=["{figure,[^/]+}.png"],
               caption="../report/transformation.rst", category="4. Latent space", subcategory="transformations",
               labels={"transformation": "{name}"}),
    params:
        options=step_options(TransformOptions),
        transformations=config["latent"]["transform"]["file"],  # its review is checked (a WARNING line), not hashed
    log:
        "logs/latent/transform/{name}.log",
    benchmark:
        "benchmarks/latent/transform/{name}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: gpu_threads(config["latent"]["transform"])
    resources:
        **gpu_resources(config["latent"]["transform"], cpu_mem_mb=8000, gpu_mem_mb=8000),
    shell:
        "dermsynth latent transform --options {params.options} --network {input.network} "
        "--sefa {input.sefa} --inversion {input.inversion} --lmdb {input.lmdb} --out {output} "
        "--transformations {params.transformations} --threads {threads} > {log} 2>&1"


rule lpips_table:
    input:
        expand(TRANSFORMED, name=TRANSFORMATIONS),
    output:
        report("results/tables/table1.csv", caption="../report/table1.rst", category="4. Latent space",
               subcategory="HAM10000 study, Table 1"),
    params:
        reports=lambda wc, input: [f"{folder}/transform.json" for folder in input],
        data=lambda wc: data_source(config["latent"]["inversion"]["dataset"]),
    log:
        "logs/tables/table1.log",
    conda:
        "../envs/dermsynth.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "dermsynth latent lpips-table --reports {params.reports} --out {output} --data-source {params.data:q} > {log} 2>&1"


rule synthetic_dataset:
    input:
        transformed=expand(TRANSFORMED, name=TRANSFORMATIONS),
        manifest=dataset_files(config["latent"]["inversion"]["dataset"])["manifest"],
    output:
        directory(SYNTHETIC_SET),
    wildcard_constraints:
        name=one_of(SYNTHETIC, none="no-synthetic-sets"),
    params:
        options=step_options(SyntheticDatasetOptions),
    log:
        "logs/synthetic/{name}.log",
    benchmark:
        "benchmarks/synthetic/{name}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "dermsynth synthetic dataset --options {params.options} "
        "--transformed {input.transformed} --manifest {input.manifest} --out {output} > {log} 2>&1"
