"""Which raw archives a workflow config reads are not on disk (said when the workflow is planned and by
`dermsynth check-config`): one message per source, naming the folder, the files its layout needs and the config key
to change. Light (no torch, no pandas): the Snakefile imports it."""

from __future__ import annotations

from pathlib import Path

from .sources import required_files


def missing_archives(cfg: dict, produced: list[str | Path] = (), produced_folders: list[str | Path] = (),
                     config_files: list[str] = ("config/config.yaml",)) -> list[str]:
    """One message per source that a dataset of `cfg` reads whose published files are not on disk:
    the source key, the folder looked in, the files its layout needs (those missing), and the config
    key to change. Files a rule writes (`produced`, or anything under `produced_folders`: the demo
    archives) are not missing. Paths are relative to the working directory, as the workflow reads them."""
    produced = {Path(p) for p in produced}
    folders = [Path(d) for d in produced_folders]

    def made_by_a_rule(path: Path) -> bool:
        return path in produced or any(path == d or d in path.parents for d in folders)

    used = sorted({entry["source"] for ds in cfg["datasets"].values() for entry in ds["sources"]})
    where = " + ".join(map(str, config_files))
    messages = []
    for name in used:
        spec = cfg["sources"][name]
        needed = [Path(p) for p in required_files(name, spec)]
        absent = [p for p in needed if not p.exists() and not made_by_a_rule(p)]
        if not absent:
            continue
        folder = Path(spec["path"])

        def shown(path: Path) -> str:
            if path == folder:
                return "the folder itself"
            return str(path.relative_to(folder)) if folder in path.parents else str(path)
        state = "does not exist" if not folder.exists() else "exists but lacks " + ", ".join(map(shown, absent))
        layout = ", ".join(map(shown, needed))
        datasets = sorted(d for d, ds in cfg["datasets"].items() if any(e["source"] == name for e in ds["sources"]))
        messages.append(
            f"source '{name}' (type {spec['type']}, read by dataset {', '.join(datasets)}): looked in {folder} "
            f"({folder.resolve()}), which {state}; the published layout needs {layout} — put the archive's "
            f"files there as published, or set sources.{name}.path in {where} to the folder that holds them "
            f"(docs/getting-started.md, 'Your own archives': the files per type)")
    return messages
