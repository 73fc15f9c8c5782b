# The federated stage's paths, lists and input functions; its rules are in ../federated.smk, which includes
# this file first (snakemake --lint wants functions apart from rules).
# Owns: the runs (`FED_RUNS`), their paths (`FEDERATED_*`), inputs and resources (one allocation holds the
# federation: GPUs per SuperNode × hospitals), `federated_outputs`.

from dermsynth.federated.options import run_hospitals

FED_RUNS = list(config["federated"])
FEDERATED_NETWORK = "results/federated/{run}/network-final.pt"
FEDERATED_ROUNDS = "results/federated/{run}/rounds.csv"
FEDERATED_ALONE = "results/federated/{run}/alone/{hospital}/network-final.pt"
FEDERATED_CURVES = "results/federated/{run}/fid-curves.csv"
FEDERATED_SAMPLES = "results/federated/{run}/samples.png"
FEDERATED_TABLE = "results/tables/{run}_federated.csv"
FEDERATED_FIGURE = "results/figures/{run}_federated-fid.png"


def federated_outputs():
    return expand([FEDERATED_TABLE, FEDERATED_FIGURE, FEDERATED_SAMPLES], run=FED_RUNS)


def federated_data(wildcards):
    """The LMDB, manifest and federated split of run `wildcards.run`'s dataset."""
    dataset = config["federated"][wildcards.run]["dataset"]
    return {**dataset_files(dataset), "federated": DATASET_FEDERATED.format(dataset=dataset)}


def federation_resources(wildcards):
    """The run's section, with `gpus` = GPUs per SuperNode × hospitals (one allocation holds the federation)."""
    spec = config["federated"][wildcards.run]
    return {**spec, "gpus": spec["gpus"] * len(run_hospitals(config, wildcards.run))}


def alone_networks(wildcards):
    spec = config["federated"][wildcards.run]
    if not spec["baselines"]:
        return []
    return expand(FEDERATED_ALONE, run=wildcards.run, hospital=run_hospitals(config, wildcards.run))


def central_network(wildcards):
    central = config["federated"][wildcards.run].get("central")
    return [NETWORK.format(gan=central)] if central else []
