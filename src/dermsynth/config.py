"""Load and validate the workflow configuration against workflow/schemas/config.schema.yaml."""

from __future__ import annotations

import copy
import difflib
import importlib.util
import math
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import ConfigError
from .scenarios import EDGE, Scenario, authenticity_classifier, edge_classifier, name_problems, scenario_names

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"

MBSTD_GROUP_SIZE = 4
"""StyleGAN2's minibatch-standard-deviation group ([SG2]/[PG]; `gan.networks.Discriminator`'s `mbstd_group_size`):
a constant of the architecture, not a setting. A per-process batch must be at most this or a multiple of it."""


def load_schema() -> dict[str, Any]:
    """The config schema (workflow/schemas/config.schema.yaml) as a dict (read with libyaml's C loader where PyYAML
    has it: the pure-Python reader takes about ten times as long for the schema's 42 kB, on every plan)."""
    return yaml.load(SCHEMA_PATH.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def schema_defaults(section: str) -> dict[str, Any]:
    """The schema's defaults of one config section, as `validate_config` fills them into an absent one.

    `section` is a dotted path of the schema: `"latent.e4e"`, `"classifiers.isic.recipe"`, `"gans.*"` for an entry
    of a map (a `gans` entry's defaults, its `network` filled too). Keys without a default (required ones such as
    a generator's `dataset` and `kimg`, or its `seed`, inherited from the project's) are absent. For settings
    built by hand (tests, benchmarks, the review app); a verb reads its options. Raises KeyError naming a path
    the schema does not have."""
    schema = load_schema()
    node = schema
    for part in section.split("."):
        node = _resolve(node, schema)
        inner = node.get("additionalProperties") if part == "*" else node.get("properties", {}).get(part)
        if not isinstance(inner, dict):
            raise KeyError(f"the config schema has no section {section!r} (at {part!r})")
        node = inner
    values: dict[str, Any] = {}
    fill_defaults(values, node, schema)
    return values


def _where(path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    where = _where(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        key = f"{where}.{unknown[0]}" if error.absolute_path else unknown[0]
        hint = f"allowed keys here: {', '.join(allowed)}" if allowed else "no other keys allowed here"
        return f"unknown key '{key}' ({hint})"
    if error.validator == "type" and isinstance(error.instance, str) and _reads_as(error.instance, error.validator_value):
        value = yaml.safe_dump(yaml.safe_load(error.instance), default_flow_style=True).removesuffix("\n...\n").strip()
        wanted = " or ".join(TYPE_WORDS.get(t, t) for t in _wanted_types(error.validator_value))
        return (f"'{where}': '{error.instance}' is a string (in quotes) where {wanted} is wanted: write {value} "
                "without quotes")
    return f"'{where}': {error.message}"


TYPE_WORDS = {"integer": "an integer", "number": "a number", "boolean": "a boolean (true or false)", "null": "null",
              "string": "a string", "array": "a list", "object": "a mapping"}


def _wanted_types(validator_value) -> list[str]:
    return [validator_value] if isinstance(validator_value, str) else list(validator_value)


def _reads_as(text: str, validator_value) -> bool:
    """Whether the string `text` read as YAML is a value of one of the scalar types the schema wants (`"8"` for
    an integer, `"true"` for a boolean, `"null"`)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return any(t in SCALAR_TYPES and isinstance(value, SCALAR_TYPES[t])
               and not (t in ("integer", "number") and isinstance(value, bool)) for t in _wanted_types(validator_value))


def _resolve(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        name = schema["$ref"].split("/")[-1]
        schema = root["$defs"][name]
    return schema


def fill_defaults(instance: Any, schema: dict, root: dict) -> None:
    """Set schema defaults for absent keys, recursively (also inside maps and arrays)."""
    schema = _resolve(schema, root)
    if isinstance(instance, dict):
        for key, sub in schema.get("properties", {}).items():
            sub_resolved = _resolve(sub, root)
            if key not in instance and "default" in sub_resolved:
                instance[key] = copy.deepcopy(sub_resolved["default"])
            if key in instance:
                fill_defaults(instance[key], sub_resolved, root)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, value in instance.items():
                if key not in schema.get("properties", {}):
                    fill_defaults(value, extra, root)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            fill_defaults(item, schema["items"], root)


def _workflow_defaults(cfg: dict, raw: dict) -> list[str]:
    """Defaults that depend on the rest of a whole workflow config (the Snakefile's, not a job's part):
    the ISIC study's classifiers are on by default only when the config defines their dataset or one
    of their generators, so a config with only its own datasets and generators plans only those. When
    they are on, each missing name is an error (`_check_semantics`)."""
    problems = []
    isic = cfg["classifiers"]["isic"]
    given = isinstance(raw.get("classifiers"), dict) and "enabled" in (raw["classifiers"].get("isic") or {})
    named = {isic["dataset"]} | {name for per_class in isic["generators"].values() for name in per_class.values()}
    if isic["enabled"] and not given and not named & (set(cfg["datasets"]) | set(cfg["gans"])):
        isic["enabled"] = False
    elif isic["enabled"] and isic["dataset"] not in cfg["datasets"]:
        problems.append(f"'classifiers.isic.dataset': '{isic['dataset']}' is not defined under 'datasets' "
                        f"(defined: {', '.join(cfg['datasets']) or 'none'}; or set classifiers.isic.enabled: false)")
    ham = cfg["classifiers"]["ham10000"]
    if (ham.get("synthetic") or cfg["latent"]["inversion"]["gans"]) and ham["dataset"] not in cfg["datasets"]:
        problems.append(f"'classifiers.ham10000.dataset': '{ham['dataset']}' is not defined under 'datasets' "
                        f"(defined: {', '.join(cfg['datasets']) or 'none'}): the HAM10000 study's classifiers train on "
                        "the dataset whose images the SA sets transform — set it to that dataset's name")
    return problems


def _check_semantics(cfg: dict, workflow: bool = False) -> list[str]:
    problems = []
    for name, source in cfg["sources"].items():
        if source["type"] == "isic2018_task3" and "part" not in source:
            problems.append(f"'sources.{name}.part' is required for type isic2018_task3 "
                            "(Training, Validation or Test)")
    for name, ds in cfg["datasets"].items():
        for i, entry in enumerate(ds["sources"]):
            if entry["source"] not in cfg["sources"]:
                problems.append(f"'datasets.{name}.sources[{i}].source': '{entry['source']}' is not "
                                f"defined under 'sources' (defined: {', '.join(cfg['sources'])})")
        fractions = ds["split"]["fractions"]
        if not math.isclose(sum(fractions.values()), 1.0, abs_tol=1e-6):
            problems.append(f"'datasets.{name}.split.fractions' must sum to 1 "
                            f"(they sum to {sum(fractions.values()):.4g})")
        if "train" not in fractions or fractions["train"] <= 0:
            problems.append(f"'datasets.{name}.split.fractions.train' must be > 0")
    for name, gan in cfg.get("gans", {}).items():
        if gan["dataset"] not in cfg["datasets"]:
            problems.append(f"'gans.{name}.dataset': '{gan['dataset']}' is not defined under 'datasets'")
    for part in ("sefa", "projection", "inversion"):
        for i, name in enumerate(cfg.get("latent", {}).get(part, {}).get("gans", [])):
            if name not in cfg.get("gans", {}):
                problems.append(f"'latent.{part}.gans[{i}]': '{name}' is not defined under 'gans'")
    inversion = cfg.get("latent", {}).get("inversion", {})
    if inversion.get("gans") and inversion.get("dataset") not in cfg["datasets"]:
        problems.append(f"'latent.inversion.dataset': '{inversion.get('dataset')}' is not defined under 'datasets'")
    for i, name in enumerate(cfg.get("evaluation", {}).get("table1_gans", [])):
        if name not in cfg.get("gans", {}):
            problems.append(f"'evaluation.table1_gans[{i}]': '{name}' is not defined under 'gans' "
                            f"(defined: {', '.join(cfg.get('gans', {})) or 'none'})")
    return problems + _check_minibatch_std(cfg) + _check_federated(cfg) + (_check_stages(cfg) if workflow else [])


def _check_minibatch_std(cfg: dict) -> list[str]:
    """Each discriminator's batch splits into minibatch-std groups (`MBSTD_GROUP_SIZE`), which it checks only when
    training starts: a generator's `batch` per process (divided among `gpus` processes under torchrun; one process
    for 0 or 1 GPU) and a federated run's `batch` (every hospital trains it in one process) must be at most the
    group size or a multiple of it."""
    runs = [(f"gans.{name}", gan["batch"], max(gan.get("gpus", 1), 1)) for name, gan in cfg.get("gans", {}).items()]
    runs += [(f"federated.{name}", run["batch"], 1) for name, run in (cfg.get("federated") or {}).items()]
    return [f"'{key}.batch': {problem}" for key, batch, processes in runs
            if (problem := _per_process_batch_problem(batch, processes))]


def _per_process_batch_problem(batch: int, processes: int) -> str | None:
    """Why `batch` images split among `processes` processes do not fit the minibatch-std groups (None: they do),
    with the nearest batches that fit."""
    group, (per, rest) = MBSTD_GROUP_SIZE, divmod(batch, processes)
    if not rest and (per <= group or per % group == 0):
        return None
    step = group * processes  # valid: k · processes for k ≤ group, then the multiples of step
    unit = processes if batch <= step else step
    above = -(-batch // unit) * unit
    below = batch // step * step if batch >= step else batch // processes * processes
    share = f"over {processes} GPUs (one process each) is {batch / processes:g} per process" if processes > 1 else \
        "per process"
    return (f"{batch} images {share}; StyleGAN2's minibatch standard deviation needs at most {group} or a multiple "
            f"of {group} per process: set it to {above}" + (f" or {below}" if below else ""))


def federated_fine_tuning(section: Mapping, run: str) -> str | None:
    """Why federated run `run` cannot have the `init`/`freeze_d` its `section` sets (the keys reach `federated.*`
    through the schema's shared generator properties; every hospital builds the starting networks from the run's
    seed and cannot read a checkpoint on the coordinator's machine), or None when it sets neither."""
    keys = [key for key in ("init", "freeze_d") if section.get(key)]
    if not keys:
        return None
    return (f"{' and '.join(keys)}: not available for a federated run (every hospital builds the starting networks "
            f"from the run's seed and cannot read a checkpoint on the coordinator's machine); remove it from "
            f"federated.{run}, or fine-tune centrally (gans.<name>.init, docs/transfer-learning.md)")


def _check_federated(cfg: dict) -> list[str]:
    """Each federated run names a dataset with a federated split and hospitals of it, and asks for at most as
    many answering hospitals as it has, and does not ask to fine-tune (`federated_fine_tuning`; its central
    generator is a cross-stage reference: `_check_stages`)."""
    problems = []
    for name, run in (cfg.get("federated") or {}).items():
        where = f"'federated.{name}"
        dataset = cfg["datasets"].get(run["dataset"])
        if dataset is None or "federated" not in dataset:
            federated = ", ".join(n for n, d in cfg["datasets"].items() if "federated" in d) or "none"
            problems.append(f"{where}.dataset': '{run['dataset']}' is not a dataset with a 'federated' section "
                            f"(federated datasets: {federated})")
            continue
        known = sorted(dataset["federated"]["hospitals"])
        unknown = sorted(set(run.get("hospitals") or []) - set(known))
        if unknown:
            problems.append(f"{where}.hospitals': {unknown} are not hospitals of datasets.{run['dataset']}.federated "
                            f"(hospitals: {', '.join(known)})")
        count = len(run.get("hospitals") or known)
        if run.get("min_available_nodes", 1) > count:
            problems.append(f"{where}.min_available_nodes': {run['min_available_nodes']} is more than the run's "
                            f"{count} hospitals")
        fine_tuning = federated_fine_tuning(run, name)
        if fine_tuning:
            problems.append(f"{where}': {fine_tuning}")
    return problems


def _check_stages(cfg: dict) -> list[str]:
    """Cross-stage references of a whole workflow config (what the Snakefile plans): the ISIC classifiers'
    generators exist (aug-edge's too), and the generators the authenticity stage explains are projected. A config
    used by hand for one verb need not define the other stages."""
    problems = []
    isic = cfg.get("classifiers", {}).get("isic", {})
    if isic.get("enabled"):
        for family, per_class in isic.get("generators", {}).items():
            for label, name in per_class.items():
                if name not in cfg.get("gans", {}):
                    problems.append(f"'classifiers.isic.generators.{family}.{label}': '{name}' is not defined under "
                                    "'gans' (or set classifiers.isic.enabled: false)")
        edge = isic.get("edge", {})
        if edge.get("enabled") and edge.get("gan") not in cfg.get("gans", {}):
            problems.append(f"'classifiers.isic.edge.gan': '{edge.get('gan')}' is not defined under 'gans' (defined: "
                            f"{', '.join(cfg.get('gans', {})) or 'none'}; or set classifiers.isic.edge.enabled: false)")
    for name, run in (cfg.get("federated") or {}).items():
        if run.get("central") and run["central"] not in cfg.get("gans", {}):
            problems.append(f"'federated.{name}.central': '{run['central']}' is not defined under 'gans' "
                            f"(defined: {', '.join(cfg.get('gans', {})) or 'none'})")
    problems += _check_frames(cfg)
    projected = cfg["latent"]["projection"]["gans"]
    for i, name in enumerate(cfg["explain"]["authenticity"]["gans"]):
        if name not in projected:
            problems.append(f"'explain.authenticity.gans[{i}]': '{name}' is not projected; add it to "
                            f"'latent.projection.gans' (now: {', '.join(projected) or 'none'})")
    return problems


def _check_frames(cfg: dict) -> list[str]:
    """Frame removal (explain.frames): its generator exists and its family is an ISIC generator family."""
    frames = cfg["explain"]["frames"]
    if frames["gan"] is None:
        return []
    problems = []
    if frames["gan"] not in cfg.get("gans", {}):
        problems.append(f"'explain.frames.gan': '{frames['gan']}' is not defined under 'gans' "
                        f"(defined: {', '.join(cfg.get('gans', {})) or 'none'}; or set it to null)")
    families = cfg["classifiers"]["isic"]["generators"]
    if frames["family"] not in families:
        problems.append(f"'explain.frames.family': '{frames['family']}' is not a family of "
                        f"'classifiers.isic.generators' (families: {', '.join(families) or 'none'})")
    else:
        for label, name in families[frames["family"]].items():
            if name not in cfg.get("gans", {}):
                problems.append(f"'classifiers.isic.generators.{frames['family']}.{label}': '{name}' (the frameless "
                                "set's generator) is not defined under 'gans'")
    return problems


def _check_classifier_references(cfg: dict) -> list[str]:
    """The classifiers a whole workflow config names across stages (what the Snakefile plans, `dermsynth.scenarios`):
    every scenario name reads back as its scenario; aug-edge's edge classifier (`classifiers.isic.edge.classifier`
    and `.architecture`, null → the authenticity stage's) is an ISIC scenario other than aug-edge and an
    architecture trained here; so is the authenticity stage's (`explain.authenticity.classifier`, `.architecture`)
    when it explains a generator."""
    problems = name_problems(cfg)
    isic, authenticity = cfg["classifiers"]["isic"], cfg["explain"]["authenticity"]
    names, aug_edge = scenario_names(cfg, "isic"), Scenario(EDGE).name
    trained = f"(classifiers.isic.architectures: {', '.join(isic['architectures']) or 'none'})"
    if aug_edge in names:
        scenario, arch = edge_classifier(cfg)
        fallback = {key: "" if isic["edge"][key] else f" (null: explain.authenticity.{key})"
                    for key in ("classifier", "architecture")}
        if scenario not in names or scenario == aug_edge:
            problems.append(f"'classifiers.isic.edge.classifier'{fallback['classifier']}: '{scenario}' is not an ISIC "
                            "classifier scenario aug-edge can be made from (scenarios: "
                            f"{', '.join(n for n in names if n != aug_edge)})")
        if arch not in isic["architectures"]:
            problems.append(f"'classifiers.isic.edge.architecture'{fallback['architecture']}: '{arch}' is not "
                            f"trained here {trained}")
    if authenticity["gans"]:
        scenario, arch = authenticity_classifier(cfg)
        if scenario not in names:
            problems.append(f"'explain.authenticity.classifier': '{scenario}' is not an ISIC classifier scenario of "
                            f"this config (scenarios: {', '.join(names) or 'none'})")
        if arch not in isic["architectures"]:
            problems.append(f"'explain.authenticity.architecture': '{arch}' is not trained here {trained}")
    return problems


TIMM_MODEL = re.compile(r"^@register_model\s*\n\s*def\s+(\w+)", re.M)
TIMM_DEPRECATED = re.compile(r"register_model_deprecations\(\s*__name__\s*,\s*\{(.*?)\}\s*\)", re.S)
QUOTED_KEY = re.compile(r"['\"]([\w.-]+)['\"]\s*:")
OWN_MODEL = re.compile(r"^@register_model\(\s*['\"]([^'\"]+)['\"]\s*\)", re.M)


def architecture_names(classifiers: bool = True) -> frozenset[str] | None:
    """The model names a config may give: timm's (what `timm.is_model` accepts: every `@register_model` function
    and every name of a `register_model_deprecations` map in timm/models/), read from timm's source files without
    importing timm (planning must not load PyTorch: reading them takes about 60 ms, importing timm 2½ s), and,
    with `classifiers`, the names registered with `@register_model("name")` in `dermsynth.classify` (non-timm
    classifiers, `dermsynth.classify.models`). None when timm is not installed (nothing is checked then).
    tests/test_config.py checks the set against timm's own registry."""
    timm = _timm_names()
    return None if timm is None else timm | _own_classifier_names() if classifiers else timm


@cache
def _timm_names() -> frozenset[str] | None:
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        return None
    names = set()
    for path in (Path(spec.submodule_search_locations[0]) / "models").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        names.update(TIMM_MODEL.findall(text))
        for block in TIMM_DEPRECATED.findall(text):
            names.update(QUOTED_KEY.findall(block))
    return frozenset(names)


@cache
def _own_classifier_names() -> frozenset[str]:
    return frozenset(name for path in (Path(__file__).resolve().parent / "classify").glob("*.py")
                     for name in OWN_MODEL.findall(path.read_text(encoding="utf-8")))


def _configured_architectures(cfg: dict) -> list[tuple[str, str, bool]]:
    """(key, model name, whether a classifier) of every model name the config gives: the classifiers of both
    studies, aug-edge's edge classifier, the authenticity stage's classifier, the e4e and HyperStyle backbones."""
    classifiers, explain = cfg.get("classifiers", {}), cfg.get("explain", {})
    given = [(f"classifiers.{study}.architectures[{i}]", name, True)
             for study in ("ham10000", "isic") for i, name in enumerate(classifiers.get(study, {}).get("architectures", []))]
    given.append(("classifiers.isic.edge.architecture",
                  classifiers.get("isic", {}).get("edge", {}).get("architecture"), True))
    given.append(("explain.authenticity.architecture", explain.get("authenticity", {}).get("architecture"), True))
    given += [(f"latent.{part}.backbone", cfg.get("latent", {}).get(part, {}).get("backbone"), False)
              for part in ("e4e", "hyperstyle")]
    return [(key, name, classifier) for key, name, classifier in given if name is not None]


def _check_architectures(cfg: dict) -> list[str]:
    """A model name that neither timm nor `dermsynth.classify.models` knows, with the closest names (difflib)."""
    problems = []
    for key, name, classifier in _configured_architectures(cfg):
        known = architecture_names(classifier)
        if known is None or name.split(".", 1)[0] in known:  # timm ignores a pretrained tag (densenet121.tv_in1k)
            continue
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"did you mean {', '.join(close[:-1])}{' or ' if len(close) > 1 else ''}{close[-1]}?" if close \
            else "timm.list_models() lists timm's"
        what = "neither a timm model nor registered in dermsynth.classify.models" if classifier else \
            "not a timm model"
        problems.append(f"'{key}': '{name}' is {what}; {hint}")
    return problems


SCALAR_TYPES = {"boolean": (bool,), "integer": (int,), "number": (int, float), "null": (type(None),)}


def _given_at(overrides: dict, path) -> object:
    """The value `overrides` holds at `path` (a list of keys and indices), or None where it holds none."""
    node = overrides
    for part in path:
        if isinstance(node, Mapping) and part in node or isinstance(node, list) and isinstance(part, int) \
                and part < len(node):
            node = node[part]
        else:
            return None
    return node


def _typed_overrides(cfg: dict, validator, overrides: dict) -> None:
    """Snakemake reads nested `--config` values as strings (`evaluation={'snapshots': True}` gives
    'True'): where such a string (one `overrides`, the `--config` values, holds at that key) stands where the
    schema wants a boolean, number or null and reads as one in YAML, use that value. Strings the schema accepts,
    and every value of a config file (`batch: "8"` is refused, naming the key), are left alone."""
    for _ in range(100):
        for error in validator.iter_errors(cfg):
            if error.validator != "type" or not isinstance(error.instance, str) or not error.absolute_path \
                    or _given_at(overrides, list(error.absolute_path)) != error.instance:
                continue
            if _reads_as(error.instance, error.validator_value):
                value = yaml.safe_load(error.instance)
                *parents, last = error.absolute_path
                target = cfg
                for part in parents:
                    target = target[part]
                target[last] = value
                break  # the errors are recomputed for the changed config
        else:
            return


def validate_config(raw: dict | None, origin: str = "config", workflow: bool = False,
                    overrides: dict | None = None) -> dict:
    """Return a validated copy of `raw` with defaults filled; raise ConfigError naming the key.

    `workflow`: `raw` is a whole workflow config (the Snakefile's), not the part one job reads: the
    defaults that depend on the rest of the config are filled and cross-references checked. `overrides`: the
    values of Snakemake's `--config` (already merged into `raw`), whose nested strings are read as the schema's
    types; a config file's values are never coerced (`batch: "8"` is an error naming the key and the fix).
    Every model name (`classifiers.*.architectures`, …) must be one timm or dermsynth knows (`architecture_names`),
    else the error suggests the closest."""
    schema = load_schema()
    cfg = copy.deepcopy(raw) if raw is not None else {}
    validator = jsonschema.Draft202012Validator(schema)
    if workflow and overrides:
        _typed_overrides(cfg, validator, overrides)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = "\n".join(f"  - {_describe(e)}" for e in errors)
        raise ConfigError(f"{origin} is invalid:\n{lines}\n"
                          f"See workflow/schemas/config.schema.yaml for every key and its type.")
    length_keys = [f"'federated.{name}.{key}'" for name, run in (cfg.get("federated") or {}).items()
                   if isinstance(run, dict) for key in ("kimg", "snapshot_kimg", "splits") if key in run]
    if length_keys:
        raise ConfigError(f"{origin} is invalid:\n  - {', '.join(length_keys)}: a federated run's length is "
                          "rounds × local_steps steps of `batch` and it trains on the hospitals' images; "
                          "remove the key")
    fill_defaults(cfg, schema, schema)
    problems = _workflow_defaults(cfg, raw or {}) if workflow else []
    problems += _check_semantics(cfg, workflow) + _check_architectures(cfg)
    problems += _check_classifier_references(cfg) if workflow else []
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{origin} is invalid:\n{lines}")
    for name, ds in cfg["datasets"].items():
        ds["split"].setdefault("seed", cfg["seed"])
        if "federated" in ds:
            ds["federated"].setdefault("seed", cfg["seed"])
    for gan in cfg["gans"].values():
        gan.setdefault("seed", cfg["seed"])
    for run in cfg["federated"].values():
        run.setdefault("seed", cfg["seed"])
        hospitals = run.get("hospitals") or cfg["datasets"][run["dataset"]]["federated"]["hospitals"]
        run.setdefault("min_available_nodes", len(hospitals))
        for key in ("kimg", "snapshot_kimg", "splits"):  # the gans defaults the shared key list filled in
            run.pop(key, None)
    return cfg


def load_config(path: str | Path, workflow: bool = False) -> dict:
    """Read and validate a config file; `workflow`: it is a whole workflow config (see validate_config)."""
    return validate_config(read_config_file(path), origin=str(Path(path)), workflow=workflow)


def read_config_file(path: str | Path) -> dict:
    """The raw mapping of a YAML config file. Raises ConfigError in one line naming the file, what it is and
    the fix: missing, a folder, empty, not text, not YAML (with the line and column), not a mapping."""
    path = Path(path)
    fix = "pass --config with the workflow's config (config/config.yaml for the demo)"
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist; {fix}")
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a config file; {fix}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text (YAML) file; {fix}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}; fix its permissions or {fix}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML{at}: {problem}; fix the file there") from None
    if raw is None:
        raise ConfigError(f"{path} is empty (no keys); {fix}")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {type(raw).__name__}")
    return raw


def dataset_config(cfg: dict, name: str) -> dict:
    """The validated section of dataset `name`. Raises ConfigError naming the defined datasets when it is not one."""
    if name not in cfg["datasets"]:
        raise ConfigError(f"dataset '{name}' is not defined under 'datasets' "
                          f"(defined: {', '.join(cfg['datasets'])})")
    return cfg["datasets"][name]


def data_size_warnings(cfg: dict, manifest_of) -> list[str]:
    """Sizes the ingested data cannot support, said when the workflow is planned: a generator's `batch` above its
    training images (of its classes), a classifier `recipe.batch` above its training split, and a validation or
    test split of a classifier's dataset without a class its metrics need. `manifest_of(dataset)` is the path of
    a dataset's manifest.csv, or None when there is none written under this config (`data.options.current_manifest`);
    a dataset not split yet (no manifest) is not judged (the verb says it at its
    start). One line per problem, naming the config key to change."""
    frames = {}

    def manifest(dataset: str):
        """`dataset`'s split manifest as a DataFrame (read once), or None when none is written under this config."""
        if dataset not in frames:
            path = manifest_of(dataset)
            frames[dataset] = _read_split_manifest(Path(path)) if path else None
        return frames[dataset]

    lines = []
    for name, gan in cfg["gans"].items():
        frame = manifest(gan["dataset"])
        if frame is None:
            continue
        train = frame[frame["split"] == "train"]
        if gan.get("classes"):
            train = train[train["label"].isin(gan["classes"])]
        if gan["batch"] > len(train):
            which = f" of class {', '.join(gan['classes'])}" if gan.get("classes") else ""
            lines.append(f"'gans.{name}.batch': {gan['batch']} is more than the {len(train)} training images{which} "
                         f"in {manifest_of(gan['dataset'])}; lower it to at most {len(train)}")
    for study in ("ham10000", "isic"):
        section = cfg["classifiers"][study]
        if study == "isic" and not section.get("enabled"):
            continue
        frame = manifest(section["dataset"]) if section["dataset"] in cfg["datasets"] else None
        if frame is None:
            continue
        train = frame[frame["split"] == "train"]
        batch = section["recipe"]["batch"]
        if batch > len(train):
            lines.append(f"'classifiers.{study}.recipe.batch': {batch} is more than the {len(train)} training images "
                         f"of dataset {section['dataset']}; lower it to at most {len(train)}")
        classes = set(train["label"])
        for split in ("validation", "test"):
            missing = sorted(classes - set(frame.loc[frame["split"] == split, "label"]))
            if missing:
                lines.append(f"the {split} split of dataset {section['dataset']} ({manifest_of(section['dataset'])}) "
                             f"has no image of class {', '.join(missing)}, which classifiers.{study}'s metrics need: "
                             f"raise 'datasets.{section['dataset']}.split.fractions.{split}' or set "
                             f"'datasets.{section['dataset']}.split.require_all_classes: true'")
    return lines


def _read_split_manifest(path: Path):
    """The `split` and `label` columns of a manifest, or None when it is missing or not one (a job rewrites it)."""
    # deferred: pandas — `dermsynth --help` and the options modules import this module
    import pandas as pd
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path, usecols=["split", "label"], dtype=str, keep_default_na=False)
    except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    return frame
