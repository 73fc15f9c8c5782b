# GAN stage: train every generator under `gans` (ISIC study: ben-GAN, mal-GAN, cGAN variants;
# HAM10000 study: one unconditional GAN). Snapshots in the output folder are resume points.
# A job with several GPUs runs one process per GPU through torchrun inside its allocation.
# Its paths, lists and input functions: helpers/gan.smk.

include: "helpers/gan.smk"

from dermsynth.gan.options import TrainGanOptions


rule train_gan:
    input:
        unpack(gan_data),
        unpack(gan_init),
    output:
        NETWORK,
    params:
        options=step_options(TrainGanOptions),
        out=subpath(output[0], parent=True),
        launcher=gan_launcher,
    log:
        "logs/gan/train_gan/{gan}.log",
    benchmark:
        "benchmarks/gan/train_gan/{gan}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: gpu_threads(lambda wc: config["gans"][wc.gan])
    resources:
        **gpu_resources(lambda wc: config["gans"][wc.gan], cpu_mem_mb=4000),
    shell:
        "{params.launcher} gan train --options {params.options} --lmdb {input.lmdb} "
        "--manifest {input.manifest} --out {params.out} --threads {threads} > {log} 2>&1"


rule gan_samples:
    """The final generator at a glance: the same seeds in every row, one row per class when conditional."""
    input:
        NETWORK,
    output:
        sheet=report(GAN_SAMPLES, caption="../report/gan_samples.rst", category="2. Generators",
                     subcategory="{gan}", labels={"generator": "{gan}", "figure": "samples of the final G_ema"}),
        rows="results/gan/{gan}/samples.json",
    log:
        "logs/gan/gan_samples/{gan}.log",
    benchmark:
        "benchmarks/gan/gan_samples/{gan}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    resources:
        mem_mb=4000,
        runtime=20,
    shell:
        "dermsynth gan sample-sheet --network {input} --out {output.sheet} --device cpu > {log} 2>&1"
