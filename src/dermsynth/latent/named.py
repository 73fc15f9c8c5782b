"""The named transformations file (config/transformations.yaml), read and checked without torch.

Light on purpose: the Snakefile (planning, `snakemake -n`), the latent options and the review app read the
file through `load_transformations`, so this module imports neither torch nor any module that does. It also
holds the SeFa layer ranges (`LAYER_RANGES`), the vocabulary a transformation's `layer_range` is checked
against; `dermsynth.latent.sefa` uses the same table to choose the layers it factorises.
"""

from __future__ import annotations

import copy
import functools
import hashlib
from dataclasses import dataclass
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
    raw = _read_yaml(path) or {}
    entries = raw.get("transformations") if isinstance(raw, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: expected a non-empty list under 'transformations:'")
    problems, seen = [], set()
    for i, entry in enumerate(entries):
        problems += _entry_problems(entry, f"{path}: transformations[{i}]", seen, gans)
    if problems:
        raise ConfigError("invalid transformations:\n" + "\n".join(f"  - {p}" for p in problems))
    return entries


def _read_yaml(path: Path):
    """`path` parsed as YAML; a file unchanged since the last read (same modification time and size) is not
    parsed again — planning reads the transformations once per job that uses them. Returns a copy the caller
    may change."""
    stat = path.stat()
    return copy.deepcopy(_parsed(str(path), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=8)
def _parsed(path: str, mtime_ns: int, size: int):
    return yaml.load(Path(path).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


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
        problems.append(f"{where}: gan {entry['gan']!r} is not one of latent.inversion.gans "
                        f"({', '.join(gans) or 'none'}): named on another generator — name your own with "
                        "`dermsynth review`, into a copy of this file given as latent.transform.file")
    return problems


# ---- which checkpoint an entry was reviewed on ---------------------------------------------------------------
REVIEW_KEY = "review"  # an entry's review block: reviewed_by, reviewed_on, generator, checkpoint_sha256
REVIEWED, STALE, NOT_REVIEWED, UNKNOWN = "reviewed", "stale", "not reviewed", "unknown"


def checkpoint_sha256(path: str | Path) -> str:
    """SHA-256 (64 hex characters) of a checkpoint file's bytes. Raises FileNotFoundError when it does not exist."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ReviewState:
    """What a review record says about the generator used now.

    `state`: REVIEWED (recorded on this generator), STALE (recorded on another), NOT_REVIEWED (no record: a
    hand-written or shipped entry, e.g. the repository's config/transformations.yaml), UNKNOWN (the record holds
    only an identity that was not given to compare). `reviewed_on` (ISO 8601) and `reviewed` (the recorded
    identity) are empty strings when there is no record."""
    state: str
    reviewed_on: str = ""
    reviewed: str = ""

    def describe(self) -> str:
        """Short text for a table cell: 'reviewed here', 'stale — reviewed on <date> (<id>…)', 'shipped, not reviewed
        here', ''."""
        if self.state == REVIEWED:
            return "reviewed here"
        if self.state == STALE:
            return f"stale — reviewed on {self.reviewed_on[:10] or '?'} ({self.reviewed[:12]}…)"
        return "shipped, not reviewed here" if self.state == NOT_REVIEWED else ""


def review_state(record: dict | None, generator: str | None = None, checkpoint: str | None = None) -> ReviewState:
    """Judge a review record against the generator used now.

    `record`: a transformation's `review:` block or a `rejected:` record (keys `generator` — the
    `latent.identity.generator_digest` of G_ema, the identity SeFa files and inversions record — and/or
    `checkpoint_sha256` — `checkpoint_sha256` of the network file; `reviewed_on`), or None. `generator` and
    `checkpoint`: those identities of the generator now (either may be None when not computed). The generator
    digest is compared when both sides have it, else the file's SHA-256."""
    if not record or not any(k in record for k in ("generator", "checkpoint_sha256")):
        return ReviewState(NOT_REVIEWED)
    when = str(record.get("reviewed_on") or "")
    for key, current in (("generator", generator), ("checkpoint_sha256", checkpoint)):
        if record.get(key) and current:
            recorded = str(record[key])
            return ReviewState(REVIEWED if recorded == current else STALE, when, recorded)
    return ReviewState(UNKNOWN, when, str(record.get("generator") or record.get("checkpoint_sha256")))


def review_warning(entry: dict, state: ReviewState, network) -> str | None:
    """The one line `dermsynth latent transform` prints for an entry not reviewed on `network` (None when it was,
    or when that cannot be told)."""
    fix = f"check it (and its direction index) with `dermsynth review --gan {entry['gan']}`"
    if state.state == STALE:
        return (f"transformation {entry['name']} was reviewed on another checkpoint ({state.reviewed[:12]}…, "
                f"{state.reviewed_on[:10] or 'undated'}), not on {network}: direction {entry['direction']} may now "
                f"show something else; {fix}")
    if state.state == NOT_REVIEWED:
        return (f"transformation {entry['name']} was never reviewed on {network} (a shipped or hand-written entry: "
                f"its direction index was picked on another generator); {fix}")
    return None
