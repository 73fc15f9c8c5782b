"""What made an output: config, seed, software versions, code revision."""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

_PACKAGES = ("dermsynth", "numpy", "pandas", "pillow", "opencv-python-headless", "lmdb", "torch",
             "torchvision", "snakemake", "scikit-learn", "timm", "zennit", "zennit-crp")


def package_versions() -> dict[str, str]:
    """The installed version of Python and of each package whose version can change a result (`_PACKAGES`;
    'not installed' for those absent), as every output's provenance records them."""
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_revision() -> str | None:
    """The commit of the checkout the code runs from, with '+dirty' for local changes."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def config_digest(section: Any) -> str:
    """The first 16 hex digits of the SHA-256 of `section` as canonical JSON (keys sorted, non-JSON values as str):
    the same settings give the same digest in every process."""
    text = json.dumps(section, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def provenance(step: str, config_section: Any, seed: int | None = None) -> dict[str, Any]:
    """The block every output's JSON carries."""
    return {
        "step": step,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "config": config_section,
        "config_digest": config_digest(config_section),
        "versions": package_versions(),
        "git_revision": git_revision(),
    }
