"""The config is validated against the JSON schema; errors name the key and what is wrong."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from dermsynth.config import load_config, schema_defaults, validate_config
from dermsynth.errors import ConfigError

from .conftest import REPO


def test_default_config_is_valid_and_defaults_are_filled():
    cfg = load_config(REPO / "config" / "config.yaml")
    assert cfg["datasets"]["isic"]["split"]["require_all_classes"] is False  # absent from the file: schema default
    assert cfg["datasets"]["isic"]["split"]["seed"] == cfg["seed"]  # inherits the project seed
    assert cfg["datasets"]["ham10000"]["sources"][0]["split"] == "auto"


def _raw():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_unknown_key_is_named_with_its_path():
    raw = _raw()
    raw["datasets"]["ham10000"]["resolutoin"] = 64
    with pytest.raises(ConfigError, match=r"unknown key 'datasets\.ham10000\.resolutoin'.*allowed keys here: .*resolution"):
        validate_config(raw)


def test_wrong_type_is_named_with_its_path():
    raw = _raw()
    raw["datasets"]["isic"]["resolution"] = "sixty-four"
    with pytest.raises(ConfigError, match=r"'datasets\.isic\.resolution': 'sixty-four' is not of type 'integer'"):
        validate_config(raw)


def test_bad_enum_value_inside_a_list_is_located():
    raw = _raw()
    raw["datasets"]["ham10000"]["sources"][1]["split"] = "holdout"
    with pytest.raises(ConfigError, match=r"'datasets\.ham10000\.sources\[1\]\.split'"):
        validate_config(raw)


def test_reference_to_undefined_source_is_an_error():
    raw = _raw()
    raw["datasets"]["isic"]["sources"][0]["source"] = "isic2021"
    with pytest.raises(ConfigError, match=r"datasets\.isic\.sources\[0\]\.source.*'isic2021' is not defined"):
        validate_config(raw)


def test_fractions_must_sum_to_one():
    raw = _raw()
    raw["datasets"]["isic"]["split"]["fractions"] = {"train": 0.7, "validation": 0.2, "test": 0.2}
    with pytest.raises(ConfigError, match=r"fractions' must sum to 1"):
        validate_config(raw)


def test_isic2018_needs_its_part():
    raw = _raw()
    del raw["sources"]["isic2018_test"]["part"]
    with pytest.raises(ConfigError, match=r"sources\.isic2018_test\.part' is required"):
        validate_config(raw)


@pytest.mark.parametrize("section, name, changes, message", [
    ("gans", "cgan", {"batch": 6}, r"'gans\.cgan\.batch': 6 images per process; StyleGAN2's minibatch standard "
                                   r"deviation needs at most 4 or a multiple of 4 per process: set it to 8 or 4$"),
    ("gans", "cgan", {"batch": 24, "gpus": 4}, r"'gans\.cgan\.batch': 24 images over 4 GPUs \(one process each\) is 6 "
                                               r"per process; .* set it to 32 or 16$"),
    ("gans", "cgan", {"batch": 6, "gpus": 4}, r"'gans\.cgan\.batch': 6 images over 4 GPUs .* is 1\.5 per process; .* "
                                              r"set it to 8 or 4$"),
    ("federated", "isic", {"batch": 10}, r"'federated\.isic\.batch': 10 images per process; .* set it to 12 or 8$"),
])
def test_a_batch_the_minibatch_std_groups_do_not_tile_is_refused_at_validation(section, name, changes, message):
    """StyleGAN2's discriminator groups a per-process batch in fours (MinibatchStd raises when training starts): the
    config is refused when it is planned, in one line naming the key and batches that fit."""
    raw = _raw()
    raw[section][name].update(changes)
    with pytest.raises(ConfigError) as caught:
        validate_config(raw)
    lines = [line for line in str(caught.value).splitlines() if "minibatch" in line]
    assert len(lines) == 1, str(caught.value)
    assert re.search(message, lines[0].strip(" -")), lines[0]


@pytest.mark.parametrize("changes", [{"batch": 3}, {"batch": 12}, {"batch": 16, "gpus": 4}, {"batch": 4, "gpus": 2}])
def test_a_batch_the_minibatch_std_groups_tile_is_valid(changes):
    raw = _raw()
    raw["gans"]["cgan"].update(changes)
    assert validate_config(raw)["gans"]["cgan"]["batch"] == changes["batch"]


def test_check_config_refuses_an_unknown_architecture_and_a_quoted_batch(tmp_path):
    raw = _raw()
    raw["classifiers"]["isic"]["architectures"] = ["efficientnet-b2"]
    raw["gans"]["cgan"]["batch"] = "8"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "-m", "dermsynth", "check-config", "--config", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'gans.cgan.batch': '8' is a string (in quotes) where an integer is wanted: write 8" in result.stderr
    raw["gans"]["cgan"]["batch"] = 8
    bad.write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "-m", "dermsynth", "check-config", "--config", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'classifiers.isic.architectures[0]': 'efficientnet-b2' is neither a timm model nor registered in " \
           "dermsynth.classify.models; did you mean efficientnet_b2" in result.stderr


def test_cli_reports_config_errors_without_traceback(tmp_path):
    raw = _raw()
    raw["ingest"]["encodnig"] = "png"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "-m", "dermsynth.cli", "check-config", "--config", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown key 'ingest.encodnig'" in result.stderr
    assert "Traceback" not in result.stderr


def test_workflow_config_reads_snakemakes_string_overrides_as_the_schema_types():
    """`--config evaluation="{'snapshots': True}"` reaches the Snakefile as 'True' (Snakemake reads nested
    values as strings): where the schema wants a boolean/number/null, the string's YAML value is used;
    strings the schema accepts stay strings, and a string that is no such value is still named."""
    raw = _raw()
    given = {"evaluation": {"snapshots": "True", "kid_subset": "8", "real_samples": "null", "copy_ratio": "0.2"},
             "sources": {"ham10000": {"path": "2026"}}}  # as Snakemake's --config gives them
    raw["evaluation"].update(given["evaluation"])
    raw["sources"]["ham10000"]["path"] = "2026"
    cfg = validate_config(raw, workflow=True, overrides=given)
    assert cfg["evaluation"]["snapshots"] is True and cfg["evaluation"]["kid_subset"] == 8
    assert cfg["evaluation"]["real_samples"] is None and cfg["evaluation"]["copy_ratio"] == 0.2
    assert cfg["sources"]["ham10000"]["path"] == "2026"
    raw["evaluation"]["snapshots"] = given["evaluation"]["snapshots"] = "maybe"
    with pytest.raises(ConfigError, match=r"'evaluation\.snapshots': 'maybe' is not of type 'boolean'"):
        validate_config(raw, workflow=True, overrides=given)
    raw["evaluation"]["snapshots"] = given["evaluation"]["snapshots"] = "True"
    with pytest.raises(ConfigError, match=r"'evaluation\.snapshots': 'True' is a string \(in quotes\) where a "
                                          r"boolean \(true or false\) is wanted: write true without quotes"):
        validate_config(raw, workflow=True)  # a file's own values are not reinterpreted


@pytest.mark.parametrize("workflow", [True, False])
def test_a_quoted_value_in_a_config_file_is_refused_with_the_key_and_the_fix(workflow):
    """`batch: "8"` is a string where the schema wants an integer: refused (not coerced), naming the key and
    what to write, wherever it is in the config (a map entry, a list item, a nested section)."""
    raw = _raw()
    raw["gans"]["cgan"]["batch"] = "8"
    raw["latent"]["e4e"]["lr"] = "1e-4"  # YAML 1.1 reads 1e-4 without a dot as a string: not offered as a number
    raw["datasets"]["isic"]["split"]["require_all_classes"] = "false"
    raw["explain"]["frames"]["magnitudes"] = [1.0, "2"]
    with pytest.raises(ConfigError) as error:
        validate_config(raw, workflow=workflow)
    lines = str(error.value).splitlines()
    assert "  - 'gans.cgan.batch': '8' is a string (in quotes) where an integer is wanted: write 8 without quotes" \
        in lines
    assert "  - 'datasets.isic.split.require_all_classes': 'false' is a string (in quotes) where a boolean (true or " \
           "false) is wanted: write false without quotes" in lines
    assert "  - 'explain.frames.magnitudes[1]': '2' is a string (in quotes) where a number is wanted: write 2 " \
           "without quotes" in lines
    assert "  - 'latent.e4e.lr': '1e-4' is not of type 'number'" in lines


def test_an_unknown_model_name_is_refused_with_the_closest_names():
    raw = _raw()
    raw["classifiers"]["ham10000"]["architectures"] = ["densenet12", "resnet10t.c3_in1k"]  # a tag: timm's name
    raw["latent"]["e4e"]["backbone"] = "resnet_34"
    with pytest.raises(ConfigError) as error:
        validate_config(raw, workflow=True)
    lines = str(error.value).splitlines()[1:]
    assert lines == ["  - 'classifiers.ham10000.architectures[0]': 'densenet12' is neither a timm model nor registered "
                     "in dermsynth.classify.models; did you mean densenet121, densenet201 or densenet169?",
                     "  - 'latent.e4e.backbone': 'resnet_34' is not a timm model; did you mean resnet34, resnetv2_34 "
                     "or resnet34d?"]
    raw["latent"]["e4e"]["backbone"] = "qqqqqqqq"
    with pytest.raises(ConfigError, match=r"'latent\.e4e\.backbone': 'qqqqqqqq' is not a timm model; "
                                          r"timm\.list_models\(\) lists timm's$"):
        validate_config({"latent": {"e4e": {"backbone": "qqqqqqqq"}}})  # checked in a job's part too


def test_the_model_names_read_without_importing_timm_are_timms_registry():
    """`architecture_names` reads timm's source files (planning must not import PyTorch); the names are exactly
    what `timm.is_model` accepts (its entrypoints: current and deprecated names) and the classifiers registered in
    dermsynth.classify.models."""
    import timm
    from timm.models import _registry

    from dermsynth.classify.models import registered_models
    from dermsynth.config import architecture_names
    assert architecture_names(False) == frozenset(_registry._model_entrypoints)  # timm.is_model's own set
    assert set(timm.list_models()) < architecture_names(False)
    assert set(registered_models()) <= architecture_names(True)
    assert architecture_names(True) >= architecture_names(False)


def test_isic_classifiers_default_on_only_when_the_config_names_their_dataset_or_generators():
    raw = {"sources": {"c": {"type": "folder", "path": "c"}},
           "datasets": {"c": {"labels": "ham7", "resolution": 32, "sources": [{"source": "c"}],
                              "split": {"group_by": "patient", "fractions": {"train": 1.0}}}},
           "gans": {"g": {"dataset": "c", "kimg": 1}}}
    assert validate_config(raw, workflow=True)["classifiers"]["isic"]["enabled"] is False
    assert validate_config(_raw(), workflow=True)["classifiers"]["isic"]["enabled"] is True  # the demo's
    with pytest.raises(ConfigError, match=r"'classifiers\.isic\.dataset': 'isic' is not defined under 'datasets' "
                                          r"\(defined: c; or set classifiers\.isic\.enabled: false\)"):
        validate_config({**raw, "classifiers": {"isic": {"enabled": True}}}, workflow=True)
    partial = _raw()  # the ISIC study with one of its generators deleted: named, not silently switched off
    del partial["gans"]["cgan_no_color"]
    partial["evaluation"]["table1_gans"].remove("cgan_no_color")
    with pytest.raises(ConfigError, match=r"'classifiers\.isic\.generators\.cgan_no_color\.benign': 'cgan_no_color' "
                                          r"is not defined under 'gans' \(or set classifiers\.isic\.enabled: false\)"):
        validate_config(partial, workflow=True)


def test_check_config_names_the_archives_that_are_not_there_yet(tmp_path, monkeypatch, capsys):
    """`check-config` on the study config in a folder without its archives: valid, and each absent source is
    named as the dry run names it (a user should not read "valid" as "ready to run")."""
    import shutil

    from dermsynth.cli import main
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config").mkdir()  # the transformations file the study config names, read as the dry run reads it
    shutil.copy(REPO / "config" / "transformations.yaml", tmp_path / "config")
    assert main(["check-config", "--config", str(REPO / "config/study.yaml")]) == 0
    out = capsys.readouterr().out
    assert "valid (7 sources, 3 datasets)" in out
    assert out.count("not found yet: source '") == 7 and "sources.ham10000.path" in out
    assert main(["check-config", "--config", str(REPO / "config/config.yaml")]) == 0  # the demo: a rule writes them
    assert "not found yet" not in capsys.readouterr().out


def test_schema_defaults_are_what_validation_fills_into_an_absent_section():
    filled = validate_config({})
    assert schema_defaults("latent.e4e") == filled["latent"]["e4e"]
    assert schema_defaults("classifiers.isic.recipe") == filled["classifiers"]["isic"]["recipe"]
    entry = schema_defaults("gans.*")
    assert entry["augment"] == "bgc" and entry["network"]["z_dim"] == 512
    assert "dataset" not in entry and "seed" not in entry  # required, or inherited from the project's seed
    with pytest.raises(KeyError, match="no section 'latent.nosuch'"):
        schema_defaults("latent.nosuch")


def _own_ham_config(tmp_path, **changes) -> dict:
    """The demo config as a researcher renames it for a HAM10000 download: dataset `ham`, generator `ham_gan`
    (the try-out of issue 29), with `changes` as dotted keys."""
    raw = _raw()
    raw["datasets"]["ham"] = raw["datasets"].pop("ham10000")
    raw["gans"]["ham_gan"] = dict(raw["gans"].pop("ham10000"), dataset="ham")
    raw["latent"]["sefa"]["gans"] = ["ham_gan", "mal_gan"]
    raw["latent"]["inversion"].update(gans=["ham_gan"], dataset="ham")
    for key, value in changes.items():
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return raw


def _check(tmp_path, raw) -> subprocess.CompletedProcess:
    path = tmp_path / "my.yaml"
    path.write_text(yaml.safe_dump(raw))
    return subprocess.run([sys.executable, "-m", "dermsynth", "check-config", "--config", str(path)],
                          cwd=tmp_path, capture_output=True, text=True)


def test_check_config_says_what_the_dry_run_would_about_the_classifiers_dataset_and_the_transformations(tmp_path):
    """What passed `check-config` and then stopped the dry run (issue 29's try-out): the HAM10000 classifiers'
    default dataset name, and transformations named on another generator — each one line, exit 2."""
    result = _check(tmp_path, _own_ham_config(tmp_path, **{
        "latent.transform.file": str(REPO / "config" / "transformations.yaml")}))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'classifiers.ham10000.dataset': 'ham10000' is not defined under 'datasets'" in result.stderr
    assert "set it to that dataset's name" in result.stderr
    result = _check(tmp_path, _own_ham_config(tmp_path, **{
        "classifiers.ham10000.dataset": "ham", "latent.transform.file": str(REPO / "config" / "transformations.yaml")}))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "gan 'ham10000' is not one of latent.inversion.gans (ham_gan)" in result.stderr
    assert "a copy of this file given as latent.transform.file" in result.stderr
    own = yaml.safe_load((REPO / "config" / "transformations.yaml").read_text())
    for entry in own["transformations"]:
        entry["gan"] = "ham_gan"
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(own))
    result = _check(tmp_path, _own_ham_config(tmp_path, **{
        "classifiers.ham10000.dataset": "ham", "latent.transform.file": str(tmp_path / "mine.yaml")}))
    assert result.returncode == 0, result.stderr


def test_sizes_are_judged_only_on_a_manifest_written_under_this_config(tmp_path):
    """A manifest left by another config's run (the demo's, before the study's dry run) says nothing about this
    config's data: no size warning from it; the same manifest under its own config is judged."""
    import json

    from dermsynth.config import data_size_warnings
    from dermsynth.data.options import IngestOptions, SplitOptions, current_manifest
    cfg = load_config(REPO / "config" / "config.yaml", workflow=True)
    folder = tmp_path / "results" / "data" / "isic"
    folder.mkdir(parents=True)
    rows = ["key,label,split"] + [f"k{i},malignant,train" for i in range(3)] + ["v,malignant,validation"]
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    for name, options in (("ingest.json", IngestOptions), ("splits.json", SplitOptions)):
        digest = options.from_config(cfg, dataset="isic").digest
        (folder / name).write_text(json.dumps({"provenance": {"config_digest": digest}}))
    root = tmp_path / "results" / "data"
    warnings = data_size_warnings(cfg, lambda dataset: current_manifest(cfg, dataset, root))
    assert any("'gans.mal_gan.batch'" in line and "3 training images of class malignant" in line for line in warnings)
    other = load_config(REPO / "config" / "config.yaml", workflow=True)
    other["datasets"]["isic"]["split"]["seed"] = 7  # another config's split of the same archives
    assert current_manifest(other, "isic", root) is None
    assert data_size_warnings(other, lambda dataset: current_manifest(other, dataset, root)) == []
