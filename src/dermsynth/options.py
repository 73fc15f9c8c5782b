"""Typed step options: the one contract between the workflow and a verb.

Every verb that reads configuration has a frozen dataclass of exactly the settings it reads (a subclass of
`StepOptions`, declared in its stage package's `options.py`). The Snakefile validates the user's whole config
once (`config.validate_config(..., workflow=True)`: schema defaults filled, cross-references checked, errors
named), builds each job's options with `Options.from_config(config, **wildcards)` and writes them to a
content-addressed JSON file that is the job's `options` parameter: changing a key re-runs exactly the jobs
whose options contain it. The verb loads that file with `Options.load` — no schema, no default filling — so a
setting that is not in the options cannot be read: a missing field is an `AttributeError`, a missing key of
an embedded config section an `OptionError` (both an `AttributeError` and a `KeyError`), at once.

A verb run by hand takes `--config` (a whole workflow config) instead and builds the same object
(`options_from_args`).

Defaults live in the schema only (`workflow/schemas/config.schema.yaml`). A library's typed settings (a
`Settings` dataclass: `gan.options.TrainingOptions`, `latent.inversion.E4eOptions`, `classify.train.Recipe`, …)
declare the schema section they mirror (`schema_section`) and have no default for a key of it; they are built
from the validated section by `Settings.from_section`, which refuses a section that lacks a field.
`tests/test_settings.py` holds both rules statically: no code default for a schema-owned setting, and no schema
key that nothing reads.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from .config import load_config, schema_defaults
from .errors import ConfigError
from .provenance import config_digest
from .verbs import verb_name

OPTIONS_DIR = Path(".snakemake") / "dermsynth-options"


class OptionError(AttributeError, KeyError):
    """A key that is not in a step's options was read (a bug in the verb or in its Options class)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Section(dict):
    """A read-only config section inside step options: `section["key"]` and `section.key` both work;
    a key that is not there raises `OptionError` naming the section's path, instead of a default.
    It is a `dict` (JSON-serialisable, `.get` for keys the schema leaves optional), but cannot be changed."""

    __slots__ = ("_path",)

    def __init__(self, data: dict, path: str = "options"):
        super().__init__({k: freeze(v, f"{path}.{k}") for k, v in data.items()})
        object.__setattr__(self, "_path", path)

    def __missing__(self, key):
        raise OptionError(f"{self._path}.{key} is not in this step's options (present: "
                          f"{', '.join(map(str, self)) or 'none'}); add it to the step's Options class")

    def __getattr__(self, key: str):
        if key.startswith("__"):
            raise AttributeError(key)
        return self[key]

    def _read_only(self, *args, **kwargs):
        raise TypeError(f"{self._path} is read-only (step options are frozen)")

    __setitem__ = __delitem__ = __setattr__ = clear = pop = popitem = setdefault = update = _read_only

    def __deepcopy__(self, memo):
        return thaw(self)

    def __reduce__(self):
        return (Section, (thaw(self), self._path))


def freeze(value: Any, path: str = "options") -> Any:
    """Dicts (recursively) → `Section`; lists keep their items frozen the same way; scalars as they are."""
    if isinstance(value, dict):
        return value if isinstance(value, Section) else Section(value, path)
    if isinstance(value, (list, tuple)):
        return [freeze(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def thaw(value: Any) -> Any:
    """Plain dicts and lists again (a mutable copy)."""
    if isinstance(value, dict):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


SettingsT = TypeVar("SettingsT", bound="Settings")


class _SchemaFilled(type):
    """Metaclass of `Settings`: a keyword construction by hand (`Recipe(lr=1e-6, epochs=3)`) takes every setting
    it does not name from the schema's defaults — the one place defaults live — instead of failing on a missing
    argument. Verbs build settings with `from_section`, which refuses a section lacking a key."""

    def __call__(cls, *args, **kwargs):
        if not args:
            missing = [name for name in cls.setting_names() if name not in kwargs]
            if missing:
                defaults = cls.schema_default_values()
                kwargs.update({name: thaw(defaults[cls.schema_keys.get(name, name)]) for name in missing
                               if cls.schema_keys.get(name, name) in defaults})
        return super().__call__(*args, **kwargs)


class Settings(metaclass=_SchemaFilled):
    """Base of a library's typed settings: a dataclass whose fields mirror the keys of one config section, built
    once from the schema-validated section by `from_section` and read by attribute (`recipe.lr`, not
    `spec["lr"]`).

    Class attributes (the registry `tests/test_settings.py` reads):

    - `schema_section`: the dotted schema path of the section mirrored (`"latent.e4e"`; `*` for any entry of a
      map: `"gans.*"`), or a tuple of paths when several sections share the layout (the two studies' recipes);
    - `schema_keys`: field → the key it mirrors, where the names differ (`PplOptions.samples` ←
      `evaluation.ppl_samples`); otherwise a field mirrors the key of its own name;
    - `method_constants`: fields that are constants of the method, not settings (StyleGAN2's lazy-regularisation
      intervals, the projector's learning-rate schedule); they alone keep a default in code, and none of them
      may be a key of the section.

    Every other field mirrors a schema key and has no default in code: the schema holds it (with its description).
    Built by hand with keywords (`Recipe(lr=1e-6, epochs=3)`), the fields not named take the schema's defaults
    (`schema_default_values`); a field the schema has no default for must be named (TypeError otherwise)."""

    schema_section: ClassVar[str | tuple[str, ...]] = ()
    schema_keys: ClassVar[dict[str, str]] = {}
    method_constants: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def schema_default_values(cls) -> dict[str, Any]:
        """The schema's defaults of `schema_section` (the first path where it names several: the HAM10000 recipe of
        `Recipe`, a `gans` entry of `TrainingOptions`): what a keyword construction by hand fills in for the fields
        it does not name. Keys the schema gives no default (a generator's `kimg`) stay required."""
        section = cls.schema_section if isinstance(cls.schema_section, str) else cls.schema_section[0]
        return schema_defaults(section)

    @classmethod
    def setting_names(cls) -> list[str]:
        """The fields that mirror schema keys: every field not in `method_constants`, in declaration order."""
        return [f.name for f in dataclasses.fields(cls) if f.name not in cls.method_constants]

    @classmethod
    def from_section(cls: type[SettingsT], section: Mapping[str, Any], where: str | None = None) -> SettingsT:
        """The settings of a schema-validated config section (a dict, or a step options' `Section`): the keys that
        `setting_names` mirror (`schema_keys`), copied as plain dicts and lists; its other keys are not read, method
        constants keep their defaults. Raises ConfigError naming the section (`where`, default `schema_section`) and every key it
        lacks."""
        keys = {name: cls.schema_keys.get(name, name) for name in cls.setting_names()}
        missing = [key for key in keys.values() if key not in section]
        if missing:
            paths = cls.schema_section if isinstance(cls.schema_section, str) else " or ".join(cls.schema_section)
            raise ConfigError(f"{where or paths} lacks {', '.join(missing)} ({cls.__name__} reads every setting of "
                              "the section and has no defaults: validate the config so that the schema fills them, "
                              "or let the workflow write the options again)")
        return cls(**{name: thaw(section[key]) for name, key in keys.items()})


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """Base of every verb's options. Subclasses are frozen dataclasses whose fields are JSON values
    (str, int, float, bool, None, lists, and `Section`s for config sections read whole), set:

    - `step`: the verb's name (`train-gan`), recorded in the file and checked on load;
    - `wildcards`: the names `from_config` takes (the rule's wildcards, e.g. `("gan",)`).

    Raises `ConfigError` on load when the file is for another step or its keys differ from the fields."""

    step: ClassVar[str] = ""
    wildcards: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        for field in dataclasses.fields(self):
            object.__setattr__(self, field.name, freeze(getattr(self, field.name), field.name))

    @classmethod
    def from_config(cls, config: dict, **wildcards) -> "StepOptions":
        """The options of one job, from the validated whole workflow config (`config.validate_config`)."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        """Plain JSON-ready dict of the fields (field name → value)."""
        return {f.name: thaw(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @property
    def digest(self) -> str:
        """16 hex digits of SHA-256 of the options' canonical JSON (sorted keys): the file's name, and the
        `config_digest` of every output's provenance (`provenance.config_digest`), so an output names its file."""
        return config_digest(self.to_dict())

    def _text(self) -> str:
        return json.dumps({"step": self.step, "options": self.to_dict()}, sort_keys=True, indent=1)

    def write(self, folder: str | Path = OPTIONS_DIR) -> str:
        """Write once per distinct content (outputs.write_text: a temporary name unique to the process, then an
        atomic rename); returns the path, `<folder>/<step>-<digest>.json`. Raises OutputError when the folder
        cannot be written (read-only, full disk)."""
        # deferred: numpy and pandas (dermsynth.outputs) — the Snakefile and `dermsynth --help` import the options
        from .outputs import write_text
        path = Path(folder) / f"{self.step}-{self.digest}.json"
        if not path.exists():  # two writers of one content write the same bytes: the last rename wins, whole
            write_text(path, self._text())
        return str(path)

    @classmethod
    def from_dict(cls, data: dict, origin: str = "options") -> "StepOptions":
        """Exactly the fields, no defaults: a missing or unknown key is a `ConfigError` naming it."""
        names = [f.name for f in dataclasses.fields(cls)]
        missing, unknown = sorted(set(names) - set(data)), sorted(set(data) - set(names))
        if missing or unknown:
            raise ConfigError(f"{origin}: not the options of `dermsynth {verb_name(cls.step)}` as this version writes them "
                              f"(missing: {', '.join(missing) or 'none'}; unknown: {', '.join(unknown) or 'none'}); "
                              "let the workflow write them again (snakemake reruns the job) or pass --config")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> "StepOptions":
        """Read a file `write` made. Raises ConfigError if it is absent, not JSON, or another step's."""
        path = Path(path)
        try:
            payload = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"options file {path} does not exist (the workflow writes it; by hand, pass "
                              "--config with the workflow config instead)") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not an options file (JSON): {exc}") from None
        if not isinstance(payload, dict) or payload.get("step") != cls.step:
            found = payload.get("step") if isinstance(payload, dict) else None
            raise ConfigError(f"{path} holds the options of `dermsynth {verb_name(found)}`, not of `dermsynth {verb_name(cls.step)}`")
        return cls.from_dict(payload.get("options") or {}, origin=str(path))


def options_from_args(cls: type[StepOptions], args, flags: dict[str, str] | None = None, **wildcards) -> StepOptions:
    """A verb's options from its command line: `--options FILE` (what the workflow passes) or `--config FILE`
    (a whole workflow config, validated here) plus the wildcard flags (`wildcards`: name → flag value;
    `flags`: name → the flag's spelling where it is not `--<name>`, for the messages).
    A wildcard flag given beside `--options` must agree with the file. Raises ConfigError."""
    flag = {name: (flags or {}).get(name, f"--{name.replace('_', '-')}") for name in wildcards}
    if getattr(args, "options", None):
        options = cls.load(args.options)
        for name, value in wildcards.items():  # (checked only when given)
            if value is None or name not in {f.name for f in dataclasses.fields(cls)}:
                continue
            stored = getattr(options, name)
            if str(stored) != str(value):
                raise ConfigError(f"{flag[name]} {value} disagrees with {args.options} ({name}: {stored})")
        return options
    absent = [name for name, value in wildcards.items() if value is None]
    if absent:
        raise ConfigError(f"`dermsynth {verb_name(cls.step)}` with --config needs " + ", ".join(flag[n] for n in absent))
    # (a config for running verbs by hand may lack what other stages need: not checked here, as before)
    return cls.from_config(load_config(args.config), **wildcards)


def select(section: dict, keys: tuple[str, ...] | list[str]) -> dict:
    """The named keys of a validated config section. A key it does not hold (an optional key without a schema
    default, e.g. `evaluation.real_samples`) is left out, so reading it from the options is an OptionError;
    verbs read such keys with `.get`."""
    return {k: section[k] for k in keys if k in section}


def without(section: dict, keys: tuple[str, ...] | list[str]) -> dict:
    """A validated config section less the named keys."""
    return {k: v for k, v in section.items() if k not in keys}


def entry(config: dict, section: str, name: str, what: str | None = None) -> dict:
    """`config[section][name]`, or a ConfigError naming the section and the names it defines."""
    defined = config.get(section) or {}
    if name not in defined:
        raise ConfigError(f"{what or section.rstrip('s')} '{name}' is not defined under '{section}' "
                          f"(defined: {', '.join(defined) or 'none'})")
    return defined[name]


RESOURCE_KEYS = ("gpus", "runtime_hours")  # read by the workflow (job resources), never by a verb
