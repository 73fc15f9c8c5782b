# The gan stage's paths, lists and input functions; its rules are in ../gan.smk, which includes
# this file first (snakemake --lint wants functions apart from rules).
# Owns: `GANS`, the final checkpoint every later stage reads (`NETWORK`, `network(gan)`), `gan_data` (a
# generator's training data, also read by evaluation, projection and the encoders), `gan_outputs`.

GANS = list(config["gans"])

NETWORK = "results/gan/{gan}/network-final.pt"
GAN_SAMPLES = "results/gan/{gan}/samples.png"


def network(gan):
    """The final checkpoint of generator `gan`."""
    return NETWORK.format(gan=gan)


def gan_data(wildcards):
    """The LMDB and manifest of the dataset generator `wildcards.gan` is trained on."""
    return dataset_files(config["gans"][wildcards.gan]["dataset"])


def gan_init(wildcards):
    """The checkpoint generator `wildcards.gan` starts from (`gans.<gan>.init`), as an input: a changed file reruns
    training, and another generator's network-final.pt is trained first."""
    init = config["gans"][wildcards.gan].get("init")
    return {"init": init} if init else {}


def gan_launcher(wildcards, resources):
    """Several GPUs: one process per GPU through torchrun inside the job's allocation."""
    if resources.gpu > 1:
        return f"torchrun --standalone --nproc-per-node={resources.gpu} -m dermsynth.cli"
    return "dermsynth"


def gan_outputs():
    return expand(GAN_SAMPLES, gan=GANS)
