"""One source of truth for every setting (issue 28): a static audit of the code against the config schema.

The schema (`workflow/schemas/config.schema.yaml`) holds every default and description. The code is read with
`ast`, nothing is imported or run:

(a) no second default: a step's options (a `StepOptions` dataclass in a stage's `options.py`) hold no default; a
    library's typed settings (a `Settings` dataclass, found by its `schema_section` class attribute, the registry)
    hold a default only for a field declared a method constant, which is no key of its section, and every other
    field mirrors a key of each of its sections; a function that receives a setting from options (a call passing
    `options.batch`, `spec["lr"]`, …, by keyword or position; not a method constant read through a parameter
    annotated with its `Settings` class, `options: KidOptions` → `options.seed`) has no default for that parameter
    unless listed in `LIBRARY_DEFAULTS` with its reason (the list may only shrink: an entry that no longer applies
    fails too);
(b) no unread key: every leaf of the schema is read — mirrored by a `Settings` field of its section, passed whole
    as keyword arguments (`KWARGS_SECTIONS`), read by name in `src/` (an attribute, a string subscript, `.get`,
    `getattr`; `config.py` validates and does not count), or read by the workflow alone (`WORKFLOW_KEYS`, with
    the reason; each such name appears in the rule files).

Reads are decided by name, not by section: a new key named like one some verb reads elsewhere (`batch`) passes
(b); the options tests (`tests/test_options.py`) hold what reaches each verb. Each check is shown to fail on a
doctored schema or source.
"""

from __future__ import annotations

import ast
import copy
import functools
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from .conftest import REPO

SRC = REPO / "src" / "dermsynth"
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())

# Keys only the workflow reads: leaf name (any section) or dotted path → why no verb reads it.
WORKFLOW_KEYS = {
    "gpus": "job resources (common.smk gpu_resources/gpu_threads): never a verb's option, so a change re-runs nothing",
    "runtime_hours": "job resources (common.smk gpu_resources): the job's time limit",
    "evaluation.snapshots": "whether the gan_curve jobs (FID over snapshots) exist",
    "evaluation.table1_gans": "which generators' evaluations are rows of Table 1 (the table1 job's inputs)",
    "latent.sefa.gans": "which generators get sefa jobs",
    "latent.sefa.layer_ranges": "which layer ranges get sefa jobs (the job's wildcard `layers`)",
    "latent.projection.gans": "which generators get project jobs",
    "latent.inversion.gans": "which generators get e4e/HyperStyle/invert jobs",
    "latent.inversion.dataset": "whose manifest and LMDB are the invert job's inputs",
    "latent.transform.file": "the transformations file is read when the jobs are planned (one transform job each)",
    "classifiers.ham10000.dataset": "the HAM10000 classifiers' dataset files are the jobs' inputs",
    "classifiers.ham10000.architectures": "which HAM10000 models are trained (the wildcard `arch`)",
    "classifiers.ham10000.synthetic": "which SA sets get models (the wildcard `scenario`)",
    "classifiers.ham10000.filtered": "whether SA-n-filter models (and CRP/PCX) exist",
    "classifiers.isic.enabled": "whether the ISIC study's jobs exist",
    "classifiers.isic.dataset": "the ISIC classifiers' dataset files are the jobs' inputs",
    "classifiers.isic.architectures": "which ISIC models are trained (the wildcard `arch`)",
    "classifiers.isic.edge.enabled": "whether scenario aug-edge exists",
    "classifiers.isic.edge.gan": "whose network-final.pt is the edge_neighbours job's input",
    "classifiers.isic.edge.classifier": "which model's predictions define edge cases (a job input)",
    "classifiers.isic.edge.architecture": "which architecture's models are the edge job's inputs",
    "explain.authenticity.gans": "which generators get authenticity jobs",
    "explain.authenticity.classifier": "which ISIC model embeds the images (a job input)",
    "explain.authenticity.architecture": "which architecture's model embeds the images (a job input)",
    "explain.crp.enabled": "whether the crp and pcx jobs exist",
    "explain.frames.gan": "whether frame-removal jobs exist and whose generator is their input",
    "explain.frames.family": "which ISIC generators are the frameless_set job's inputs",
    "explain.frames.file": "a reviewed moves file replaces frame_directions' proposal as frameless_set's input",
}

# Config sections passed whole as keyword arguments: their keys are read as parameters of these classes' __init__.
KWARGS_SECTIONS = {"gans.*.network": ("gan/networks.py", ("Generator", "Discriminator")),
                   "federated.*.network": ("gan/networks.py", ("Generator", "Discriminator"))}

# A method constant named like a key of its section (it is not that setting): class.field → why.
CONSTANTS_NAMED_LIKE_A_KEY = {
    "KidOptions.seed": "KID's subsets are drawn with a fixed seed 0 (evaluation.seed chooses the real images and the "
                       "latents, not KID's subsets), as before issue 28",
}

# Defaults of library functions that also receive a value named like a setting from a verb: "file:function" →
# {parameter: reason}. None is a second default of a config setting (issue 28, item 1: the schema holds every one, a
# library function called without a config is passed the schema's value, `config.schema_defaults`); the list may
# only shrink.
FLAG = "the job's processes or GPUs, passed as a command-line flag (not an option: changing it re-runs nothing)"
LABEL = "a name shown in messages, not a setting"
LIBRARY_DEFAULTS = {
    "data/demo/archives.py:write_demo_archives": {"workers": FLAG},
    "data/ingest.py:ingest": {"workers": FLAG},
    "data/splits.py:federated_split": {"dataset": LABEL},
    "data/splits.py:split_dataset": {"dataset": LABEL},
    "explain/crp.py:cache_concept_relevances": {"composite": "'': a cache that records no composite"},
    "federated/launch.py:run_federated": {"gpus": FLAG},
    "gan/networks.py:Generator": {"channel_base": "StyleGAN2's config-f architecture (its docstring; networks built by "
                                                  "hand, e.g. the benchmarks); train-gan and train-federated pass the "
                                                  "network section whole (gan.training.build_networks)"},
}


# ---- the schema ------------------------------------------------------------------------------------------------

def _resolve(node: dict, schema: dict) -> dict:
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].split("/")[-1]]
    return node


def schema_leaves(schema: dict) -> list[str]:
    """Dotted paths of every leaf key (`*` for a named entry of `gans`, `datasets`, `sources`, `federated`); a map
    of user names to values (`synthetic.sizes`, `classifiers.isic.generators`) and an array are leaves."""
    leaves = []

    def walk(node: dict, path: list[str]) -> None:
        node = _resolve(node, schema)
        properties = node.get("properties")
        named = node.get("additionalProperties")
        if isinstance(named, dict) and "$ref" in named:
            walk(named, path + ["*"])
        elif properties:
            for key, sub in properties.items():
                walk(sub, path + [key])
        elif path:
            leaves.append(".".join(path))
    walk(schema, [])
    return leaves


def section_keys(schema: dict, section: str) -> set[str]:
    """The keys of the schema section at dotted path `section` (`*`: an entry of a map)."""
    node = schema
    for part in section.split("."):
        node = _resolve(node, schema)
        node = node["additionalProperties"] if part == "*" else node["properties"][part]
    return set(_resolve(node, schema).get("properties", {}))


# ---- the code --------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def source_trees(root: Path = SRC) -> dict[str, ast.Module]:
    """Every module of the package, by its path under `src/dermsynth/` (parsed once per test session; read-only)."""
    return {str(path.relative_to(root)): ast.parse(path.read_text()) for path in sorted(root.rglob("*.py"))}


def _literal(node: ast.AST):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


@dataclass
class DataclassInfo:
    """A class's fields as written: name → has a default; its registry attributes (None when absent)."""
    where: str
    name: str
    fields: dict[str, bool]
    sections: tuple[str, ...] | None
    schema_keys: dict[str, str]
    constants: tuple[str, ...]
    bases: tuple[str, ...]


def dataclasses_in(trees: dict[str, ast.Module]) -> list[DataclassInfo]:
    """Every `@dataclass` class of the package with its fields and (for a Settings) its registry attributes."""
    found = []
    for where, tree in trees.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef) or not any(
                    "dataclass" in ast.unparse(d) for d in node.decorator_list):
                continue
            fields, attributes = {}, {}
            for statement in node.body:
                if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
                    if "ClassVar" in ast.unparse(statement.annotation):
                        attributes[statement.target.id] = _literal(statement.value) if statement.value else None
                    else:
                        fields[statement.target.id] = statement.value is not None
                elif isinstance(statement, ast.Assign) and len(statement.targets) == 1 and isinstance(
                        statement.targets[0], ast.Name):
                    attributes[statement.targets[0].id] = _literal(statement.value)
            sections = attributes.get("schema_section")
            found.append(DataclassInfo(
                where, node.name, fields, (sections,) if isinstance(sections, str) else
                (tuple(sections) if sections else None), attributes.get("schema_keys") or {},
                tuple(attributes.get("method_constants") or ()), tuple(ast.unparse(b) for b in node.bases)))
    return found


def settings_problems(classes: list[DataclassInfo], schema: dict) -> list[str]:
    """(a) for the registry: defaults only on declared method constants, no constant a key of its section, every
    setting a key of each section; and no default at all in a step's options."""
    problems = []
    for cls in classes:
        label = f"{cls.where}: {cls.name}"
        if cls.sections is None and cls.where.endswith("/options.py"):  # a step's options (StepOptions)
            problems += [f"{label}.{f} has a default (a step's options hold what the workflow gives, no default)"
                         for f, has in cls.fields.items() if has]
        if cls.sections is None:
            continue
        for name, has_default in cls.fields.items():
            constant = name in cls.constants
            if has_default and not constant:
                problems.append(f"{label}.{name} has a default in code: the schema ({', '.join(cls.sections)}) "
                                "holds it (or declare the field a method constant)")
            if constant and not has_default:
                problems.append(f"{label}.{name} is declared a method constant but has no default")
            for section in cls.sections:
                keys = section_keys(schema, section)
                key = cls.schema_keys.get(name, name)
                if not constant and key not in keys:
                    problems.append(f"{label}.{name} mirrors no key of {section} ({key!r} is not one)")
                if constant and name in keys and f"{cls.name}.{name}" not in CONSTANTS_NAMED_LIKE_A_KEY:
                    problems.append(f"{label}.{name} is a method constant but {section}.{name} is a setting: "
                                    "the schema owns it (make the field required)")
    return problems


def read_names(trees: dict[str, ast.Module], skip: tuple[str, ...] = ("config.py",)) -> set[str]:
    """Names the package reads: attributes, string subscripts, `.get`/`.pop`/`.setdefault` and `getattr` keys."""
    names = set()
    for where, tree in trees.items():
        if where in skip:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                names.add(node.slice.value)
            elif isinstance(node, ast.Call) and node.args and isinstance(node.args[-1 if _is_getattr(node) else 0],
                                                                          ast.Constant):
                if _is_getattr(node) or (isinstance(node.func, ast.Attribute)
                                         and node.func.attr in ("get", "pop", "setdefault")):
                    names.add(node.args[1 if _is_getattr(node) else 0].value)
    return {n for n in names if isinstance(n, str)}


def _is_getattr(call: ast.Call) -> bool:
    return isinstance(call.func, ast.Name) and call.func.id == "getattr" and len(call.args) >= 2


def init_parameters(trees: dict[str, ast.Module], where: str, classes: tuple[str, ...]) -> set[str]:
    """The parameter names of the named classes' `__init__` in module `where`."""
    names = set()
    for node in ast.walk(trees[where]):
        if isinstance(node, ast.ClassDef) and node.name in classes:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    names |= {a.arg for a in item.args.args + item.args.kwonlyargs}
    return names


def unread_keys(schema: dict, trees: dict[str, ast.Module], workflow_text: str) -> list[str]:
    """(b) The schema leaves nothing reads (see the module docstring)."""
    names = read_names(trees)
    mirrored = {(section, cls.schema_keys.get(field, field))
                for cls in dataclasses_in(trees) if cls.sections for section in cls.sections
                for field in cls.fields if field not in cls.constants}
    kwargs = {section: init_parameters(trees, *target) for section, target in KWARGS_SECTIONS.items()}
    unread = []
    for leaf in schema_leaves(schema):
        section, _, key = leaf.rpartition(".")
        if (section, key) in mirrored or key in names or key in kwargs.get(section, ()):
            continue
        if (leaf in WORKFLOW_KEYS or key in WORKFLOW_KEYS) and f'"{key}"' in workflow_text:
            continue
        unread.append(leaf)
    return unread


def workflow_text() -> str:
    """The Snakefile and every rule file, concatenated."""
    files = [REPO / "Snakefile", *sorted((REPO / "workflow").rglob("*.smk"))]
    return "\n".join(path.read_text() for path in files if path.exists())


# ---- (a) keyword defaults of functions that receive a setting -----------------------------------------------------

def _setting_read(node: ast.AST, keys: set[str]) -> str | None:
    """The key an argument expression reads (`options.batch`, `spec["lr"]`, `ev.get("k")`, `int(...)` of one)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
            "int", "float", "bool", "str", "list", "tuple", "dict") and len(node.args) == 1:
        return _setting_read(node.args[0], keys)
    if isinstance(node, ast.Attribute) and node.attr in keys:
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value in keys:
        return node.slice.value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and \
            node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value in keys:
        return node.args[0].value
    return None


def _functions(trees: dict[str, ast.Module]) -> dict[str, dict[str, tuple[ast.FunctionDef, bool]]]:
    """Module → name → (definition, is a method); a class's `__init__` under the class's name."""
    defined: dict[str, dict[str, tuple[ast.FunctionDef, bool]]] = {}
    for where, tree in trees.items():
        names = defined.setdefault(where, {})
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                names[node.name] = (node, False)
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef):
                        names[node.name if item.name == "__init__" else f"{node.name}.{item.name}"] = (item, True)
    return defined


def _module_of(where: str, node: ast.ImportFrom) -> str:
    """The module path (under src/dermsynth/) an `from … import` names, or "" outside the package."""
    if node.level == 0:
        if not (node.module or "").startswith("dermsynth."):
            return ""
        parts = node.module.split(".")[1:]
    else:
        parts = where.split("/")[:-node.level] + (node.module.split(".") if node.module else [])
    return "/".join(parts)


def _imported(where: str, tree: ast.Module, modules: set[str]) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """(name → (module, its name there), alias → module) of a module's imports from the package (any depth)."""
    names, aliases = {}, {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = _module_of(where, node)
        for alias in node.names:
            module = f"{base}/{alias.name}".strip("/")
            if f"{module}.py" in modules or f"{module}/__init__.py" in modules:
                aliases[alias.asname or alias.name] = f"{module}.py" if f"{module}.py" in modules \
                    else f"{module}/__init__.py"
            elif f"{base}.py" in modules or f"{base}/__init__.py" in modules:
                names[alias.asname or alias.name] = (f"{base}.py" if f"{base}.py" in modules
                                                     else f"{base}/__init__.py", alias.name)
    return names, aliases


def _callee(call: ast.Call, where: str, defined, names, aliases) -> tuple[str, str] | None:
    """(module, name) of the package function or class a call runs, when it can be told statically."""
    func = call.func
    if isinstance(func, ast.Name):
        if func.id in defined[where]:
            return where, func.id
        return names.get(func.id)
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in aliases:
        return aliases[func.value.id], func.attr
    return None


def _defaults(function: ast.FunctionDef, method: bool) -> tuple[list[str], dict[str, ast.AST]]:
    """(positional parameter names less self/cls, parameter → default expression)."""
    args = function.args
    positional = [a.arg for a in args.posonlyargs + args.args]
    defaults = dict(zip(positional[len(positional) - len(args.defaults):], args.defaults))
    defaults.update({a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None})
    if method and positional and positional[0] in ("self", "cls"):
        positional = positional[1:]
    return positional, defaults


def _constant_reads(tree: ast.Module, constants: dict[str, tuple[str, ...]]) -> dict[int, set[tuple[str, str]]]:
    """id(call) → the (parameter, field) pairs its enclosing function's parameters annotated with a `Settings` class
    name as method constants (`options: KidOptions` → ("options", "seed")): reading one is no setting."""
    enclosing: dict[int, set[tuple[str, str]]] = {}
    for function in ast.walk(tree):  # breadth first: an inner function's calls are assigned after its outer's
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        args = function.args.posonlyargs + function.args.args + function.args.kwonlyargs
        pairs = {(a.arg, field) for a in args if a.annotation is not None
                 for field in constants.get(ast.unparse(a.annotation).strip("'\""), ())}
        for call in ast.walk(function):
            if isinstance(call, ast.Call):
                enclosing[id(call)] = pairs
    return enclosing


def _reads_constant(value: ast.AST, pairs: set[tuple[str, str]]) -> bool:
    """Whether an argument is `<parameter>.<method constant>` of its function's annotated settings."""
    return isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name) and (value.value.id,
                                                                                        value.attr) in pairs


def setting_defaults(trees: dict[str, ast.Module], keys: set[str]) -> dict[str, dict[str, str]]:
    """"file:function" → {parameter: default} for every parameter of a package function (or class) that a call fills
    with a setting read from options (`options.batch`, `spec["lr"]`, `args.workers`, …) and that has a default other
    than None (None: "not given", no second value of the setting). A method constant of a `Settings` class read from
    a parameter annotated with it (`options: KidOptions` → `options.seed`) is no setting, even when it is named like
    a key (`CONSTANTS_NAMED_LIKE_A_KEY`). Calls of methods are not followed."""
    defined, modules = _functions(trees), set(trees)
    constants = {cls.name: cls.constants for cls in dataclasses_in(trees) if cls.sections and cls.constants}
    found: dict[str, dict[str, str]] = {}
    for where, tree in trees.items():
        names, aliases = _imported(where, tree, modules)
        enclosing = _constant_reads(tree, constants)
        for call in ast.walk(tree):
            target = _callee(call, where, defined, names, aliases) if isinstance(call, ast.Call) else None
            if target is None or target[1] not in defined.get(target[0], {}):
                continue
            function, method = defined[target[0]][target[1]]
            positional, defaults = _defaults(function, method)
            passed = list(zip(positional, call.args)) + [(k.arg, k.value) for k in call.keywords if k.arg]
            for parameter, value in passed:
                default = defaults.get(parameter)
                if default is None or (isinstance(default, ast.Constant) and default.value is None):
                    continue
                if _setting_read(value, keys) and not _reads_constant(value, enclosing.get(id(call), set())):
                    found.setdefault(f"{target[0]}:{target[1]}", {})[parameter] = ast.unparse(default)
    return found


def default_problems(found: dict[str, dict[str, str]]) -> list[str]:
    """Defaults not listed in `LIBRARY_DEFAULTS`, and listed ones that no longer apply."""
    problems = [f"{function}({parameter}={default}): a verb passes this setting from its options; the schema holds "
                "its default (remove this one, or list it in LIBRARY_DEFAULTS with the reason)"
                for function, parameters in sorted(found.items()) for parameter, default in parameters.items()
                if parameter not in LIBRARY_DEFAULTS.get(function, {})]
    problems += [f"LIBRARY_DEFAULTS lists {function}({parameter}=…), which is no default of a setting any more: "
                 "remove the entry" for function, parameters in LIBRARY_DEFAULTS.items() for parameter in parameters
                 if parameter not in found.get(function, {})]
    return problems


def _leaf_names(schema: dict) -> set[str]:
    return {leaf.rpartition(".")[2] for leaf in schema_leaves(schema)}


# ---- the tests -------------------------------------------------------------------------------------------------

def test_no_default_in_code_for_a_setting_the_schema_owns():
    problems = settings_problems(dataclasses_in(source_trees()), SCHEMA)
    assert not problems, "\n".join(problems)


def test_the_registry_holds_the_settings_classes():
    registered = {c.name for c in dataclasses_in(source_trees()) if c.sections}
    assert {"TrainingOptions", "E4eOptions", "HyperStyleOptions", "Recipe", "ProjectionOptions", "MixtureFit",
            "KidOptions", "NeighbourOptions", "PplOptions"} <= registered, registered


def test_no_function_default_for_a_setting_passed_from_options():
    problems = default_problems(setting_defaults(source_trees(), _leaf_names(SCHEMA)))
    assert not problems, "\n".join(problems)


def test_every_schema_key_is_read():
    unread = unread_keys(SCHEMA, source_trees(), workflow_text())
    assert not unread, f"schema keys nothing reads (remove them, read them, or list them in WORKFLOW_KEYS): {unread}"


def test_the_workflow_keys_are_schema_keys():
    leaves = schema_leaves(SCHEMA)
    names = {leaf.rpartition(".")[2] for leaf in leaves}
    assert [k for k in WORKFLOW_KEYS if k not in leaves and ("." in k or k not in names)] == []
    text = workflow_text()
    assert [k for k in WORKFLOW_KEYS if f'"{k.rpartition(".")[2]}"' not in text] == []  # the rules read each
    for section in KWARGS_SECTIONS:
        assert any(leaf.startswith(section + ".") for leaf in leaves), section


# ---- the audit fails where it should ---------------------------------------------------------------------------

def test_an_unread_key_fails_the_audit():
    schema = copy.deepcopy(SCHEMA)
    schema["properties"]["latent"]["properties"]["e4e"]["properties"]["warmup_fraction"] = {
        "type": "number", "default": 0.1}
    schema["properties"]["evaluation"]["properties"]["table1_gans_v2"] = {"type": "array"}
    unread = unread_keys(schema, source_trees(), workflow_text())
    assert sorted(unread) == ["evaluation.table1_gans_v2", "latent.e4e.warmup_fraction"], unread


def test_a_code_default_of_a_setting_fails_the_audit():
    source = '''
from dataclasses import dataclass


@dataclass
class Fit(Settings):
    schema_section = "explain.pcx"
    method_constants = ("tolerance", "seed")
    max_prototypes: int = 8
    covariance: str
    tolerance: float = 1e-3
    seed: int = 0
    clusters: int


@dataclass(frozen=True)
class PcxLikeOptions(StepOptions):
    batch: int = 32


def fit(vectors, covariance="diag", n_init=3):
    return vectors


def run(options):
    return fit(options.vectors, options.pcx["covariance"], n_init=options.pcx.n_init)


def draw(vectors, seed=0):
    return vectors


def run_fit(options: Fit):
    return draw(options.vectors, seed=options.seed)  # a method constant of Fit: no setting


def run_spec(spec):
    return draw(spec.vectors, seed=spec.seed)  # a setting
'''
    trees = {"explain/options.py": ast.parse(source)}
    problems = settings_problems(dataclasses_in(trees), SCHEMA)
    assert any("Fit.max_prototypes has a default in code" in p for p in problems), problems
    assert any("Fit.seed is a method constant but explain.pcx.seed is a setting" in p for p in problems), problems
    assert any("Fit.clusters mirrors no key of explain.pcx" in p for p in problems), problems
    assert any("PcxLikeOptions.batch has a default" in p for p in problems), problems
    assert not any("tolerance" in p for p in problems), problems
    found = setting_defaults(trees, _leaf_names(SCHEMA))
    assert found == {"explain/options.py:fit": {"covariance": "'diag'", "n_init": "3"},
                     "explain/options.py:draw": {"seed": "0"}}, found
    assert len(default_problems(found)) == 3 + sum(map(len, LIBRARY_DEFAULTS.values()))
    assert setting_defaults({"explain/options.py": ast.parse(source.replace("spec.seed", "3"))},
                            _leaf_names(SCHEMA)) == {"explain/options.py:fit": found["explain/options.py:fit"]}


def test_settings_refuse_a_section_that_lacks_a_key():
    from dermsynth.config import schema_defaults
    from dermsynth.errors import ConfigError
    from dermsynth.explain.pcx import MixtureFit

    section = schema_defaults("explain.pcx")
    assert MixtureFit.from_section(section).n_init == SCHEMA["properties"]["explain"]["properties"]["pcx"][
        "properties"]["n_init"]["default"]
    del section["reg_covar"], section["seed"]
    with pytest.raises(ConfigError, match=r"pcx options' pcx lacks reg_covar, seed"):
        MixtureFit.from_section(section, where="pcx options' pcx")
