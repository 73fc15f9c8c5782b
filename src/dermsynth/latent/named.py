"""The named transformations file (config/transformations.yaml), read and checked without torch.

Light on purpose: the Snakefile (planning, `snakemake -n`), the latent options and the review app read the
file through `load_transformations`, so this module imports neither torch nor any module that does. It also
holds the SeFa layer ranges (`LAYER_RANGES`), the vocabulary a transformation's `layer_range` is checked
against; `dermsynth.latent.sefa` uses the same table to choose the layers it factorises.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import ConfigError

# Layer range → (lowest, highest) synthesis resolution in pixels (inclusive) of the modulated layers it takes;
# coarse = 4²–8², middle = 16²–32², fine = 64² and up, all = every layer (Shen & Zhou 2021, SeFa).
LAYER_RANGES = {"all": (0, 10**9), "coarse": (4, 8), "middle": (16, 32), "fine": (64, 10**9)}

# The keys every transformation entry must have.
REQUIRED = ("name", "gan", "layer_range", "direction", "magnitude", "description")


def load_transformations(path: str | Path, gans: list[str] | None = None) -> list[dict]:
    """The transformations of the YAML file `path` (a non-empty list under `transformations:`), checked.

    Each entry is a dict with the keys of `REQUIRED`: `name` (letters, digits, '-' and '_'; unique), `gan`,
    `layer_range` (a key of `LAYER_RANGES`), `direction` (eigenvector index, int ≥ 0), `magnitude`
    ([low, high], distance in W along the unit direction, low ≤ high) and `description`; other keys (e.g.
    `review`) are kept. With `gans`, each entry's `gan` must be one of them (the generators with an inversion).

    Returns the entries as read (plain dicts, file order). Raises ConfigError when the file does not exist, holds
    no such list, or any entry is invalid (all problems listed); yaml.YAMLError when it is not valid YAML."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"transformations file {path} does not exist (latent.transform.file)")
    raw = yaml.safe_load(path.read_text()) or {}
    entries = raw.get("transformations") if isinstance(raw, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: expected a non-empty list under 'transformations:'")
    problems, seen = [], set()
    for i, entry in enumerate(entries):
        problems += _entry_problems(entry, f"{path}: transformations[{i}]", seen, gans)
    if problems:
        raise ConfigError("invalid transformations:\n" + "\n".join(f"  - {p}" for p in problems))
    return entries


def _entry_problems(entry: dict, where: str, seen: set, gans: list[str] | None) -> list[str]:
    """What is wrong with one entry (empty when nothing); adds its name to `seen`."""
    missing = [k for k in REQUIRED if k not in entry]
    if missing:
        return [f"{where} lacks {', '.join(missing)}"]
    problems = []
    if entry["name"] in seen:
        problems.append(f"{where}: name {entry['name']!r} is used twice")
    seen.add(entry["name"])
    if not str(entry["name"]).replace("_", "").replace("-", "").isalnum():
        problems.append(f"{where}: name {entry['name']!r} may hold letters, digits, '-' and '_' only")
    if entry["layer_range"] not in LAYER_RANGES:
        problems.append(f"{where}: layer_range {entry['layer_range']!r} is not one of {', '.join(LAYER_RANGES)}")
    if not isinstance(entry["direction"], int) or entry["direction"] < 0:
        problems.append(f"{where}: direction must be an eigenvector index ≥ 0")
    magnitude = entry["magnitude"]
    if not (isinstance(magnitude, list) and len(magnitude) == 2 and magnitude[0] <= magnitude[1]):
        problems.append(f"{where}: magnitude must be [low, high] with low ≤ high")
    if gans is not None and entry["gan"] not in gans:
        problems.append(f"{where}: gan {entry['gan']!r} has no inversion (add it to latent.inversion.gans)")
    return problems
