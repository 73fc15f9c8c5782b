"""Archive readers: one per published layout, registered under the `type` a source has in the config.

A reader turns one archive (`sources.<name>` in the config: `type`, `path`, and the keys of its type) into a
`SourceCatalog`: the usable records, and a rejection for every other file and metadata row. `make_reader(name,
spec)` builds the reader of `spec["type"]`; `READERS` maps each type to its class. It is filled by the
`@register_reader` decorator when this package imports its modules (every module here, so there is no list
of readers to keep).

To add a reader for a new layout:
1. Write `sources/<layout>.py` with a class decorated `@register_reader` (from `.base`): `type_name` (the
   config's `type`), `__init__(name, spec)`, `required_files()` (what the ingest job's inputs are) and
   `read()` (use `base.read_metadata_csv` and `base.assemble`, which account for every file and row).
2. Add `type_name` to the `enum` of `$defs.source.type` in the schema — both copies,
   `src/dermsynth/schemas/config.schema.yaml` and `workflow/schemas/config.schema.yaml` — with any new keys of
   the source section.
3. Give it a demo writer: a function in `data/demo/archives.py` decorated `@demo_writer("<type_name>")` that
   writes a small archive in the published layout.
`tests/test_registries_data.py` fails until the schema's types, the registered readers and the demo writers
agree.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from ...errors import ConfigError
from .base import READERS, SourceCatalog, register_reader

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):  # each reader module registers its class
    if _module != "base":
        importlib.import_module(f"{__name__}.{_module}")


def make_reader(name: str, spec: dict):
    """The reader of source `name` (its config section `spec`, whose `type` is a registered reader).
    Raises ConfigError for a type no reader is registered under."""
    if spec["type"] not in READERS:
        raise ConfigError(f"sources.{name}.type: no archive reader for '{spec['type']}' "
                          f"(readers: {', '.join(sorted(READERS))})")
    return READERS[spec["type"]](name, spec)


def required_files(name: str, spec: dict) -> list[Path]:
    """The files a source needs: the inputs Snakemake tracks for its ingest job."""
    return make_reader(name, spec).required_files()


__all__ = ["READERS", "SourceCatalog", "make_reader", "register_reader", "required_files"]
