# Latent-space stage: SeFa directions per generator and layer range, with preview grids to name them.


rule sefa:
    input:
        network="results/gan/{gan}/network-final.pt",
    output:
        directions="results/latent/{gan}/sefa-{layers}.npz",
        summary="results/latent/{gan}/sefa-{layers}.json",
        preview="results/latent/{gan}/sefa-{layers}.png",
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
        preview="results/latent/{gan}/projection.png",
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
