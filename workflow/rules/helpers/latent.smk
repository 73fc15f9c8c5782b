# The latent stage's paths, lists and input functions; its rules are in ../latent.smk, which includes
# this file first (snakemake --lint wants functions apart from rules).
# Owns: the generators with SeFa directions and an inversion, the named transformations (config/transformations.yaml,
# read without torch: dermsynth.latent.named), the SA sets drawn (`SYNTHETIC`), the paths later stages read (`SEFA`,
# `PROJECTION`, `SYNTHETIC_SET`, …), `latent_outputs`.

from dermsynth.latent.named import load_transformations
from dermsynth.scenarios import synthetic_sets

SEFA_GANS = config["latent"]["sefa"].get("gans") or GANS
INVERSION_GANS = config["latent"]["inversion"]["gans"]
TRANSFORMS = {t["name"]: t for t in load_transformations(config["latent"]["transform"]["file"], INVERSION_GANS)} \
    if INVERSION_GANS else {}
TRANSFORMATIONS = list(TRANSFORMS)
SYNTHETIC = synthetic_sets(config)  # the SA sets drawn from the transformed images (none without an inversion)

SEFA = "results/latent/{gan}/sefa-{layers}.npz"
PROJECTION = "results/latent/{gan}/projection.npz"
E4E = "results/latent/{gan}/e4e.pt"
HYPERSTYLE = "results/latent/{gan}/hyperstyle.pt"
INVERSION = "results/latent/{gan}/inversion"
TRANSFORMED = "results/latent/transformations/{name}"
SYNTHETIC_SET = "results/synthetic/{name}"


def transform_inputs(wildcards):
    """What a transformation reads: its generator, that generator's SeFa directions of the transformation's
    layer range and stored inversion, and the inverted real images (for LPIPS to the source)."""
    spec = TRANSFORMS[wildcards.name]
    return {"network": network(spec["gan"]), "sefa": SEFA.format(gan=spec["gan"], layers=spec["layer_range"]),
            "inversion": INVERSION.format(gan=spec["gan"]),
            "lmdb": dataset_files(config["latent"]["inversion"]["dataset"])["lmdb"]}


def latent_outputs():
    outputs = [f"results/latent/{gan}/sefa-{layers}.png" for gan in SEFA_GANS
               for layers in config["latent"]["sefa"]["layer_ranges"]]
    outputs += [f"results/latent/{gan}/projection.json" for gan in config["latent"]["projection"]["gans"]]
    outputs += [f"results/latent/{gan}/hyperstyle.json" for gan in INVERSION_GANS]
    if TRANSFORMS:
        outputs.append("results/tables/table1.csv")
    return outputs + [SYNTHETIC_SET.format(name=name) for name in SYNTHETIC]
