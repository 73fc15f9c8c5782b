"""Classifier scenario names (dermsynth.scenarios): one constructor, one parser, and the classifiers a workflow
config names across stages checked by `validate_config(..., workflow=True)` (so `dermsynth check-config` says them
too, naming the key)."""

from __future__ import annotations

import copy

import pytest
import yaml

from dermsynth import scenarios
from dermsynth.config import validate_config
from dermsynth.errors import ConfigError
from dermsynth.scenarios import AUG, BASELINE, EDGE, FRAMELESS, SA, SA_FILTER, SYNTH, Scenario, parse

from .conftest import REPO

EVERY_FORM = {"baseline": Scenario(BASELINE), "SA-2k": Scenario(SA, size="SA-2k"),
              "SA-2k-filter": Scenario(SA_FILTER, size="SA-2k"),
              "cgan_no_color-synth": Scenario(SYNTH, family="cgan_no_color"), "gan-aug": Scenario(AUG, family="gan"),
              "aug-edge": Scenario(EDGE), "frameless-synth": Scenario(FRAMELESS)}


def _demo() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


@pytest.mark.parametrize("name, scenario", EVERY_FORM.items())
def test_every_form_reads_back_as_its_name(name, scenario):
    assert parse(name) == scenario and scenario.name == name and str(scenario) == name


def test_what_a_scenario_trains_on():
    assert [parse(n).synthetic_only for n in EVERY_FORM] == [False, False, False, True, False, False, True]
    assert [parse(n).adds_synthetic for n in EVERY_FORM] == [False] + [True] * 6
    assert Scenario.sa("SA-6k", filtered=True).name == "SA-6k-filter" and Scenario.isic("cgan", AUG).name == "cgan-aug"


@pytest.mark.parametrize("name", ["", "-synth", "-aug", "-filter", "SA 2k", "cgan/x-aug", "../baseline"])
def test_a_name_of_no_scenario_is_one_line_naming_the_forms(name):
    with pytest.raises(ConfigError) as error:
        parse(name)
    assert "\n" not in str(error.value) and "<family>-synth" in str(error.value) and repr(name) in str(error.value)


def test_a_study_takes_only_its_own_kinds_and_a_config_only_its_scenarios():
    assert parse("SA-2k-filter", "ham10000").size == "SA-2k" and parse("cgan-aug", "isic").family == "cgan"
    for name, study in (("cgan-aug", "ham10000"), ("SA-2k", "isic"), ("aug-edge", "ham10000")):
        with pytest.raises(ConfigError, match=f"'{name}' is not a scenario of the {study} study"):
            parse(name, study)
    with pytest.raises(ConfigError, match="unknown study 'derm'"):
        parse("baseline", "derm")
    cfg = validate_config(_demo(), workflow=True)
    assert parse("SA-6k", "ham10000", cfg) == Scenario.sa("SA-6k")
    with pytest.raises(ConfigError, match=r"'SA-4k' is not a ham10000 scenario of this config \(scenarios: baseline, "
                                          r"SA-2k, SA-6k, SA-10k, SA-2k-filter"):
        parse("SA-4k", "ham10000", cfg)


def test_the_demo_configs_scenarios_in_the_tables_order():
    cfg = validate_config(_demo(), workflow=True)
    assert scenarios.scenario_names(cfg, "ham10000") == ["baseline", "SA-2k", "SA-6k", "SA-10k", "SA-2k-filter",
                                                         "SA-6k-filter", "SA-10k-filter"]
    assert scenarios.scenario_names(cfg, "isic") == ["baseline", "gan-synth", "gan-aug", "cgan-synth", "cgan-aug",
                                                     "cgan_no_color-synth", "cgan_no_color-aug", "aug-edge",
                                                     "frameless-synth"]
    classifier = ("cgan-aug", "tf_efficientnet_lite0")  # cGAN-aug, as the study; the demo's architecture
    assert scenarios.edge_classifier(cfg) == scenarios.authenticity_classifier(cfg) == classifier
    raw = _demo()
    raw["latent"]["inversion"]["gans"] = []  # no inversion: no SA sets drawn, HAM10000 trains the baseline alone
    raw["classifiers"]["isic"]["enabled"] = False
    raw["explain"]["authenticity"]["gans"] = []
    cfg = validate_config(raw, workflow=True)
    assert scenarios.scenario_names(cfg, "ham10000") == ["baseline"] and scenarios.scenario_names(cfg, "isic") == []


def _invalid(raw: dict) -> str:
    with pytest.raises(ConfigError) as error:
        validate_config(raw, workflow=True)
    return str(error.value)


def test_the_edge_classifier_is_an_isic_scenario_and_architecture_trained_here():
    raw = _demo()
    raw["classifiers"]["isic"]["edge"].update(classifier="aug-edge", architecture="vit_tiny_patch16_224")
    said = _invalid(raw)
    assert "'classifiers.isic.edge.classifier': 'aug-edge' is not an ISIC classifier scenario aug-edge can be made " \
           "from (scenarios: baseline, gan-synth" in said
    assert "'classifiers.isic.edge.architecture': 'vit_tiny_patch16_224' is not trained here (classifiers.isic.architectures: " \
           "tf_efficientnet_lite0)" in said
    raw["classifiers"]["isic"]["edge"]["enabled"] = False  # no aug-edge: nothing to check
    validate_config(raw, workflow=True)


def test_a_null_edge_classifier_names_the_authenticity_key_it_came_from():
    raw = _demo()
    raw["explain"]["authenticity"].update(classifier="cgan-synthetic", gans=[])
    assert "'classifiers.isic.edge.classifier' (null: explain.authenticity.classifier): 'cgan-synthetic' is not an " \
           "ISIC classifier scenario" in _invalid(raw)


def test_the_authenticity_classifier_is_an_isic_scenario_and_architecture_trained_here():
    raw = _demo()
    raw["classifiers"]["isic"]["edge"]["enabled"] = False
    raw["explain"]["authenticity"].update(classifier="cgan-mixed", architecture="resnet10t")
    said = _invalid(raw)
    assert "'explain.authenticity.classifier': 'cgan-mixed' is not an ISIC classifier scenario of this config " \
           "(scenarios: baseline, gan-synth" in said
    assert "'explain.authenticity.architecture': 'resnet10t' is not trained here" in said
    validate_config(raw)  # a config read for one verb: not a whole workflow's, not cross-checked
    raw["explain"]["authenticity"]["gans"] = []  # nothing explained: nothing to check
    validate_config(raw, workflow=True)


def test_a_set_or_family_named_like_another_scenario_is_named():
    raw = _demo()
    raw["synthetic"]["sizes"]["cgan-aug"] = 100
    raw["classifiers"]["isic"]["generators"] = {"gan": {"benign": "ben_gan", "malignant": "mal_gan"},
                                                "frameless": {"benign": "cgan", "malignant": "cgan"}}
    said = _invalid(raw)
    assert "'synthetic.sizes': the synthetic set 'cgan-aug' gives the scenario name 'cgan-aug', which reads as " \
           "another scenario" in said
    assert "'classifiers.isic.generators': the generator family 'frameless' gives the scenario name " \
           "'frameless-synth'" in said
    raw = _demo()
    raw["classifiers"]["ham10000"]["synthetic"] = ["SA-2k-filter"]
    assert "'classifiers.ham10000.synthetic': the synthetic set 'SA-2k-filter'" in _invalid(raw)


def test_check_config_names_a_cross_stage_classifier(tmp_path, capsys):
    from dermsynth.cli import main
    raw = copy.deepcopy(_demo())
    raw["explain"]["authenticity"]["classifier"] = "cgan-mixed"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    assert main(["check-config", "--config", str(tmp_path / "config.yaml")]) == 2
    assert "'explain.authenticity.classifier': 'cgan-mixed'" in capsys.readouterr().err
