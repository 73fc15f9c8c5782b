# Latent-space stage: SeFa directions per generator and layer range, with preview grids to name them.


rule sefa:
    input:
        network="results/gan/{gan}/network-final.pt",
    output:
        directions="results/latent/{gan}/sefa-{layers}.npz",
        summary="results/latent/{gan}/sefa-{layers}.json",
        preview=report("results/latent/{gan}/sefa-{layers}.png", caption="../report/sefa.rst",
                       category="4. Latent space", subcategory="{gan}",
                       labels={"generator": "{gan}", "result": "SeFa directions, {layers} layers"}),
    wildcard_constraints:
        layers="all|coarse|middle|fine",
    params:
        config=sefa_config,
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
        "dermsynth sefa --config {params.config} --network {input.network} --layer-range {wildcards.layers} "
        "--out {output.directions} --preview {output.preview} > {log} 2>&1"


rule project:
    input:
        unpack(gan_data),
        network="results/gan/{gan}/network-final.pt",
    output:
        latents="results/latent/{gan}/projection.npz",
        report="results/latent/{gan}/projection.json",
        preview=report("results/latent/{gan}/projection.png", caption="../report/projection.rst",
                       category="4. Latent space", subcategory="{gan}",
                       labels={"generator": "{gan}", "result": "projection into W"}),
    params:
        config=projection_config,
    log:
        "logs/latent/project/{gan}.log",
    benchmark:
        "benchmarks/latent/project/{gan}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: lambda wc: 8 if config["latent"]["projection"]["gpus"] else 1
    resources:
        gpu=config["latent"]["projection"]["gpus"],
        mem_mb=lambda wc, attempt: 16000 * attempt,
        runtime=lambda wc, attempt: int(config["latent"]["projection"]["runtime_hours"] * 60 * attempt),
    shell:
        "dermsynth project --config {params.config} --gan {wildcards.gan} --network {input.network} "
        "--lmdb {input.lmdb} --manifest {input.manifest} --out {output.latents} --preview {output.preview} "
        "--threads {threads} > {log} 2>&1"


rule train_e4e:
    input:
        unpack(gan_data),
        network="results/gan/{gan}/network-final.pt",
    output:
        model="results/latent/{gan}/e4e.pt",
        report="results/latent/{gan}/e4e.json",
    params:
        config=lambda wc: inversion_training_config(wc, "e4e"),
    log:
        "logs/latent/train_e4e/{gan}.log",
    benchmark:
        "benchmarks/latent/train_e4e/{gan}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: lambda wc: 8 if config["latent"]["e4e"]["gpus"] else 2
    resources:
        gpu=config["latent"]["e4e"]["gpus"],
        mem_mb=lambda wc, attempt: 16000 * attempt,
        runtime=lambda wc, attempt: int(config["latent"]["e4e"]["runtime_hours"] * 60 * attempt),
    shell:
        "dermsynth train-e4e --config {params.config} --gan {wildcards.gan} --network {input.network} "
        "--lmdb {input.lmdb} --manifest {input.manifest} --out {output.model} --threads {threads} > {log} 2>&1"


rule train_hyperstyle:
    input:
        unpack(gan_data),
        network="results/gan/{gan}/network-final.pt",
        e4e="results/latent/{gan}/e4e.pt",
    output:
        model="results/latent/{gan}/hyperstyle.pt",
        report="results/latent/{gan}/hyperstyle.json",
    params:
        config=lambda wc: inversion_training_config(wc, "hyperstyle"),
    log:
        "logs/latent/train_hyperstyle/{gan}.log",
    benchmark:
        "benchmarks/latent/train_hyperstyle/{gan}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: lambda wc: 8 if config["latent"]["hyperstyle"]["gpus"] else 2
    resources:
        gpu=config["latent"]["hyperstyle"]["gpus"],
        mem_mb=lambda wc, attempt: 16000 * attempt,
        runtime=lambda wc, attempt: int(config["latent"]["hyperstyle"]["runtime_hours"] * 60 * attempt),
    shell:
        "dermsynth train-hyperstyle --config {params.config} --gan {wildcards.gan} --network {input.network} "
        "--e4e {input.e4e} --lmdb {input.lmdb} --manifest {input.manifest} --out {output.model} "
        "--threads {threads} > {log} 2>&1"


rule invert:
    input:
        unpack(inversion_data),
        network="results/gan/{gan}/network-final.pt",
        e4e="results/latent/{gan}/e4e.pt",
        hyperstyle="results/latent/{gan}/hyperstyle.pt",
    output:
        report(directory("results/latent/{gan}/inversion"), patterns=["{figure}.png"], caption="../report/inversion.rst",
               category="4. Latent space", subcategory="{gan}",
               labels={"generator": "{gan}", "result": "inversion: e4e, HyperStyle"}),
    params:
        config=inversion_config,
    log:
        "logs/latent/invert/{gan}.log",
    benchmark:
        "benchmarks/latent/invert/{gan}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: lambda wc: 8 if config["latent"]["inversion"]["gpus"] else 2
    resources:
        gpu=config["latent"]["inversion"]["gpus"],
        mem_mb=lambda wc, attempt: 16000 * attempt,
        runtime=lambda wc, attempt: int(config["latent"]["inversion"]["runtime_hours"] * 60 * attempt),
    shell:
        "dermsynth invert --config {params.config} --gan {wildcards.gan} --network {input.network} "
        "--e4e {input.e4e} --hyperstyle {input.hyperstyle} --lmdb {input.lmdb} --manifest {input.manifest} "
        "--out {output} --threads {threads} > {log} 2>&1"


rule transform:
    input:
        unpack(transform_inputs),
    output:
        report(directory("results/latent/transformations/{name}"), patterns=["{figure}.png"],
               caption="../report/transformation.rst", category="4. Latent space", subcategory="transformations",
               labels={"transformation": "{name}"}),
    params:
        config=transform_config,
    log:
        "logs/latent/transform/{name}.log",
    benchmark:
        "benchmarks/latent/transform/{name}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: lambda wc: 8 if config["latent"]["transform"]["gpus"] else 1
    resources:
        gpu=config["latent"]["transform"]["gpus"],
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=lambda wc, attempt: int(config["latent"]["transform"]["runtime_hours"] * 60 * attempt),
    shell:
        "dermsynth transform --config {params.config} --name {wildcards.name} --network {input.network} "
        "--sefa {input.sefa} --inversion {input.inversion} --lmdb {input.lmdb} --out {output} "
        "--threads {threads} > {log} 2>&1"


rule lpips_table:
    input:
        expand("results/latent/transformations/{name}", name=TRANSFORMATIONS),
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
        "dermsynth lpips-table --reports {params.reports} --out {output} --data-source {params.data:q} > {log} 2>&1"


rule synthetic_dataset:
    input:
        transformed=expand("results/latent/transformations/{name}", name=TRANSFORMATIONS),
        manifest=f"results/data/{config['latent']['inversion']['dataset']}/manifest.csv",
    output:
        directory("results/synthetic/{synthetic}"),
    wildcard_constraints:
        synthetic="|".join(map(re.escape, SYNTHETIC)) or "no-synthetic-sets",
    params:
        config=synthetic_config,
    log:
        "logs/synthetic/{synthetic}.log",
    benchmark:
        "benchmarks/synthetic/{synthetic}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "dermsynth synthetic-dataset --config {params.config} --name {wildcards.synthetic} "
        "--transformed {input.transformed} --manifest {input.manifest} --out {output} > {log} 2>&1"
