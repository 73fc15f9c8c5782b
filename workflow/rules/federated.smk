# Federated stage (ISIC study §3.2, §4.1): a federated StyleGAN2 run per `federated` entry, trained with Flower
# across the hospitals of its dataset's federated split (a SuperLink and one SuperNode per hospital as processes
# on 127.0.0.1, inside one job / one SLURM allocation), each hospital trained alone for comparison, FID curves of
# all of them and of the central generator, and the study's table.
# Its paths, lists and input functions: helpers/federated.smk.

include: "helpers/federated.smk"

from dermsynth.federated.options import (EvaluateFederatedOptions, FederatedTableOptions, HospitalAloneOptions,
                                         TrainFederatedOptions)


wildcard_constraints:
    run=r"[^/]+",
    hospital=r"[^/]+",


rule train_federated:
    input:
        unpack(federated_data),
    output:
        network=FEDERATED_NETWORK,
        rounds=FEDERATED_ROUNDS,
    params:
        options=step_options(TrainFederatedOptions),
        out=subpath(output.network, parent=True),
    log:
        "logs/federated/train_federated/{run}.log",
    benchmark:
        "benchmarks/federated/train_federated/{run}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: gpu_threads(federation_resources)
    resources:
        **gpu_resources(federation_resources, cpu_mem_mb=6000),
    shell:
        "dermsynth federated train --options {params.options} --lmdb {input.lmdb} --federated {input.federated} "
        "--out {params.out} --gpus {resources.gpu} --threads {threads} > {log} 2>&1"


rule train_alone:
    """One hospital's images only, the federated run's generator and iterations: the study's baseline."""
    input:
        unpack(federated_data),
    output:
        FEDERATED_ALONE,
    params:
        options=step_options(HospitalAloneOptions),
        out=subpath(output[0], parent=True),
    log:
        "logs/federated/train_alone/{run}-{hospital}.log",
    benchmark:
        "benchmarks/federated/train_alone/{run}-{hospital}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: gpu_threads(lambda wc: config["federated"][wc.run])
    resources:
        **gpu_resources(lambda wc: config["federated"][wc.run], cpu_mem_mb=4000),
    shell:
        "dermsynth gan train --options {params.options} --lmdb {input.lmdb} --manifest {input.manifest} "
        "--federated {input.federated} --out {params.out} --threads {threads} > {log} 2>&1"


rule evaluate_federated:
    input:
        unpack(federated_data),
        network=FEDERATED_NETWORK,
        alone=alone_networks,
        central=central_network,
        lite0_weights=LITE0_WEIGHTS,
    output:
        FEDERATED_CURVES,
    params:
        options=step_options(EvaluateFederatedOptions),
        central=lambda wc, input: f"--central {input.central}" if input.central else "",
    log:
        "logs/federated/evaluate_federated/{run}.log",
    benchmark:
        "benchmarks/federated/evaluate_federated/{run}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: gpu_threads(config["evaluation"])
    resources:
        **gpu_resources(config["evaluation"]),
    shell:
        "dermsynth federated evaluate --options {params.options} --lmdb {input.lmdb} --federated {input.federated} "
        "--federated-network {input.network} --alone {input.alone} {params.central} --out {output} "
        "--threads {threads} > {log} 2>&1"


rule federated_table:
    input:
        curves=FEDERATED_CURVES,
        rounds=FEDERATED_ROUNDS,
    output:
        table=report(FEDERATED_TABLE, caption="../report/federated_table.rst", category="7. Federated",
                     labels={"run": "{run}", "table": "federated vs alone vs central"}),
        figure=report(FEDERATED_FIGURE, caption="../report/federated_fid.rst", category="7. Federated",
                      labels={"run": "{run}", "figure": "FID over iterations"}),
    params:
        options=step_options(FederatedTableOptions),
        source=lambda wc: data_source(config["federated"][wc.run]["dataset"]),
    log:
        "logs/federated/federated_table/{run}.log",
    conda:
        "../envs/dermsynth.yaml"
    resources:
        **SMALL_JOB,
    shell:
        "dermsynth federated table --options {params.options} --curves {input.curves} --rounds {input.rounds} "
        "--out {output.table} --figure {output.figure} --data-source {params.source:q} > {log} 2>&1"


rule federated_samples:
    """The final global model at a glance (one row per class when conditional)."""
    input:
        FEDERATED_NETWORK,
    output:
        sheet=report(FEDERATED_SAMPLES, caption="../report/federated_samples.rst", category="7. Federated",
                     labels={"run": "{run}", "figure": "samples of the final global G_ema"}),
    log:
        "logs/federated/federated_samples/{run}.log",
    conda:
        "../envs/dermsynth.yaml"
    resources:
        **SMALL_JOB,
    shell:
        "dermsynth gan sample-sheet --network {input} --out {output.sheet} --device cpu > {log} 2>&1"
