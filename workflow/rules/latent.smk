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
