"""Step options (issue 13): the one contract between the workflow and a verb.

A job's options hold exactly what its verb reads; reading anything else fails at once; the file the workflow
writes is loaded verbatim (no schema defaults filled); the workflow passes every configured verb an options
file; the options of every planned job of the demo and the study config load back equal."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dermsynth
from dermsynth.verbs import RENAMED, verb_name
from dermsynth.config import load_config
from dermsynth.errors import ConfigError
from dermsynth.gan.options import TrainGanOptions
from dermsynth.options import RESOURCE_KEYS, OptionError, Section, StepOptions, options_from_args

from .conftest import REPO, placeholder_archives


def all_options_classes() -> dict[str, type[StepOptions]]:
    """Every StepOptions subclass of the package, by step (importing each stage's options module)."""
    for module in pkgutil.iter_modules(dermsynth.__path__):
        if module.ispkg and (Path(dermsynth.__path__[0]) / module.name / "options.py").exists():
            importlib.import_module(f"dermsynth.{module.name}.options")
    found, todo = {}, list(StepOptions.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if not cls.step:  # a shared base (e.g. metrics' _GeneratorEvaluation), not a verb's options
            continue
        if cls.step in found:  # another way to build the same verb's options (HospitalAloneOptions: train-gan)
            base = found[cls.step] if issubclass(cls, found[cls.step]) else cls
            other = cls if base is found[cls.step] else found[cls.step]
            assert issubclass(other, base) and [f.name for f in dataclasses.fields(other)] == \
                [f.name for f in dataclasses.fields(base)], f"two options classes for {cls.step}"
            found[cls.step] = base  # the class the verb loads
            continue
        found[cls.step] = cls
    return found


@pytest.fixture(scope="module")
def demo():
    return load_config(REPO / "config/config.yaml", workflow=True)


def test_a_key_not_in_the_options_is_an_error_at_once(demo):
    options = TrainGanOptions.from_config(demo, gan="cgan")
    with pytest.raises(AttributeError):
        options.evaluation  # a field the class does not have
    with pytest.raises(OptionError, match=r"spec\.fake_samples is not in this step's options") as error:
        options.spec["fake_samples"]
    assert isinstance(error.value, KeyError) and isinstance(error.value, AttributeError)
    with pytest.raises(AttributeError):
        options.spec.runtime_hours  # a job resource: the workflow's, never the verb's
    assert options.spec.network["z_dim"] == demo["gans"]["cgan"]["network"]["z_dim"]
    assert options.spec.network.z_dim == options.spec["network"]["z_dim"]


def test_options_are_frozen(demo):
    options = TrainGanOptions.from_config(demo, gan="cgan")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.gan = "other"
    with pytest.raises(TypeError, match="read-only"):
        options.spec["kimg"] = 1
    with pytest.raises(TypeError, match="read-only"):
        options.spec.network.update(z_dim=1)


def test_an_unknown_name_is_a_config_error_naming_what_is_defined(demo):
    with pytest.raises(ConfigError, match=r"gan 'nosuch' is not defined under 'gans' \(defined: .*cgan"):
        TrainGanOptions.from_config(demo, gan="nosuch")


def test_the_file_is_loaded_verbatim_without_defaults(demo, tmp_path):
    options = TrainGanOptions.from_config(demo, gan="cgan")
    path = Path(options.write(tmp_path))
    assert path.name == f"train-gan-{options.digest}.json"
    assert options.write(tmp_path) == str(path)  # once per distinct content
    loaded = TrainGanOptions.load(path)
    assert loaded == options and loaded.to_dict() == options.to_dict()
    payload = json.loads(path.read_text())
    del payload["options"]["spec"]["kimg"]  # a dropped key stays dropped: no schema default fills it
    path.write_text(json.dumps(payload))
    with pytest.raises(OptionError, match="kimg"):
        TrainGanOptions.load(path).spec["kimg"]
    del payload["options"]["gan"]
    path.write_text(json.dumps(payload))
    with pytest.raises(ConfigError, match=r"missing: gan"):
        TrainGanOptions.load(path)


def test_a_file_of_another_step_is_refused(demo, tmp_path):
    path = TrainGanOptions.from_config(demo, gan="cgan").write(tmp_path)
    classes = all_options_classes()
    other = next(cls for step, cls in classes.items() if step != "train-gan")
    with pytest.raises(ConfigError, match=f"holds the options of `dermsynth gan train`, not of `dermsynth {verb_name(other.step)}`"):
        other.load(path)


def test_changing_a_key_changes_the_file_and_only_then(demo):
    base = TrainGanOptions.from_config(demo, gan="cgan")
    same = TrainGanOptions.from_config(json.loads(json.dumps(demo)), gan="cgan")
    assert same.digest == base.digest
    changed = json.loads(json.dumps(demo))
    changed["gans"]["cgan"]["g_lr"] *= 2
    assert TrainGanOptions.from_config(changed, gan="cgan").digest != base.digest
    changed = json.loads(json.dumps(demo))
    changed["gans"]["cgan"]["runtime_hours"] += 1  # resources are not options: no retraining for them
    changed["evaluation"]["fake_samples"] += 1
    assert TrainGanOptions.from_config(changed, gan="cgan").digest == base.digest


def test_by_hand_and_by_file_give_the_same_options(demo, tmp_path):
    path = TrainGanOptions.from_config(demo, gan="cgan").write(tmp_path)
    by_file = options_from_args(TrainGanOptions, argparse.Namespace(options=path, config=None), gan=None)
    by_hand = options_from_args(TrainGanOptions, argparse.Namespace(options=None, config=str(REPO / "config/config.yaml")),
                                gan="cgan")
    assert by_file == by_hand
    with pytest.raises(ConfigError, match="--gan ben_gan disagrees"):
        options_from_args(TrainGanOptions, argparse.Namespace(options=path, config=None), gan="ben_gan")
    with pytest.raises(ConfigError, match="needs --gan"):
        options_from_args(TrainGanOptions, argparse.Namespace(options=None, config=str(REPO / "config/config.yaml")),
                          gan=None)


def test_sections_pickle_and_copy_as_plain_data(demo):
    import copy
    import pickle
    options = TrainGanOptions.from_config(demo, gan="cgan")
    assert pickle.loads(pickle.dumps(options)) == options
    plain = copy.deepcopy(options.spec)
    plain["kimg"] = 0  # a copy is the caller's to change
    assert type(plain) is dict and options.spec["kimg"] == demo["gans"]["cgan"]["kimg"]
    assert isinstance(Section({"a": {"b": [{"c": 1}]}})["a"]["b"][0], Section)


def _planned_options(tmp_path: Path, *args: str) -> list[tuple[str, str]]:
    """(verb, options file) of every shell command a dry run plans."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "-p",
                             "--forceall", *args], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout + result.stderr
    steps = {verb: step for step, verb in RENAMED.items()}  # the grouped verb → the step id its options record
    planned = re.findall(r"(?:dermsynth|-m dermsynth\.cli) ((?:[a-z]+ )?[a-z0-9-]+) [^\n]*?--options (\S+)", text)
    return [(steps.get(verb, verb), path) for verb, path in planned], text


@pytest.mark.parametrize("configfile", [None, "study.yaml"])
def test_every_planned_job_gets_options_that_load_back(tmp_path, configfile):
    """Demo and study config: every verb that reads configuration is passed an options file (never the
    config), and each loads with its step's class and holds no job resource."""
    import shutil
    shutil.copytree(REPO / "config", tmp_path / "config")
    args = ("--configfile", f"config/{configfile}") if configfile else ()
    if configfile:
        placeholder_archives(tmp_path, tmp_path / "config" / configfile)
    planned, text = _planned_options(tmp_path, *args)
    classes = all_options_classes()
    assert "--config " not in text, "a job still reads the whole config"
    verbs = {verb for verb, _ in planned}
    assert {"train-gan", "ingest", "split", "evaluate-gan", "gan-curve", "sefa", "project", "train-e4e",
            "train-hyperstyle", "invert", "transform", "synthetic-dataset", "train-classifier", "authenticity",
            "crp", "pcx", "edge-neighbours", "isic-edge-table", "frame-directions", "frameless-set",
            "frame-accuracy", "train-federated", "evaluate-federated", "federated-table"} <= verbs
    for verb, path in planned:
        options = classes[verb].load(tmp_path / path)
        plain = options.to_dict()
        assert not set(RESOURCE_KEYS) & set(plain), (verb, path)
        for value in plain.values():
            if isinstance(value, dict):
                assert not set(RESOURCE_KEYS) & set(value), (verb, path)
        typed_settings(verb, options)  # the sections the verb reads as typed settings are whole


def typed_settings(verb: str, options: StepOptions) -> list:
    """The typed settings (`dermsynth.options.Settings`) a verb builds from its options' sections, as the verb
    builds them: `from_section` refuses a section that lacks a key, so each planned job's options hold all."""
    from dermsynth.classify.train import recipe_from
    from dermsynth.explain.pcx import MixtureFit
    from dermsynth.gan.run import options_from
    from dermsynth.latent.inversion import E4eOptions, HyperStyleOptions
    from dermsynth.latent.project import ProjectionOptions
    build = {"train-gan": lambda o: options_from(o.spec), "train-classifier": lambda o: recipe_from(o.recipe),
             "train-e4e": lambda o: E4eOptions.from_section(o.e4e),
             "train-hyperstyle": lambda o: HyperStyleOptions.from_section(o.hyperstyle),
             "project": lambda o: ProjectionOptions.from_section(o.to_dict()),
             "edge-neighbours": lambda o: ProjectionOptions.from_section(o.to_dict()),
             "pcx": lambda o: MixtureFit.from_section(o.pcx)}
    return [build[verb](options)] if verb in build else []


def test_every_options_class_is_documented_and_light():
    """Each class says what it is for; the options modules import no torch (the Snakefile imports them)."""
    for step, cls in all_options_classes().items():
        assert cls.__doc__ and f"`dermsynth {verb_name(step)}`" in cls.__doc__, step
        assert cls.wildcards is not None
    code = "import sys, dermsynth.gan.options; print('torch' in sys.modules)"
    modules = [f"dermsynth.{m.name}.options" for m in pkgutil.iter_modules(dermsynth.__path__)
               if (Path(dermsynth.__path__[0]) / m.name / "options.py").exists()]
    code = f"import sys; import {', '.join(modules)}; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_no_function_is_longer_than_60_lines():
    import ast
    long = []
    for path in sorted((REPO / "src").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})")
    assert not long, long


def test_settings_built_by_hand_take_the_schemas_defaults():
    """A keyword construction by hand fills the fields it does not name from the schema (the one source), and
    `from_section` still refuses a section that lacks a key."""
    from dermsynth.classify.train import Recipe
    from dermsynth.config import schema_defaults
    from dermsynth.errors import ConfigError
    from dermsynth.gan.options import TrainingOptions

    recipe = Recipe(lr=1e-6, epochs=3)
    ham = schema_defaults("classifiers.ham10000.recipe")
    assert (recipe.lr, recipe.epochs) == (1e-6, 3)
    assert recipe.batch == ham["batch"] and recipe.augment == ham["augment"] and recipe.dropout == ham["dropout"]
    assert Recipe(lr=1e-6).augment is not Recipe(lr=1e-6).augment  # each gets its own copy of a list default
    with pytest.raises(TypeError, match="seed"):  # the schema has no default for a generator's seed
        TrainingOptions(batch=4)
    section = dict(schema_defaults("classifiers.isic.recipe"))
    del section["lr"]
    with pytest.raises(ConfigError, match="lacks lr"):
        Recipe.from_section(section)
