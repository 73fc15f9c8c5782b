"""The Flower App in the repository (src/dermsynth/federated/flower-app/) and the round settings' one path to the
apps: its pyproject.toml is a valid Flower app under the project's licence, its run-config defaults are the
schema's, and the ServerApp and ClientApps read the round settings from the run config, once per process.

Fast: nothing starts Flower (tests/test_federated.py runs the app folder through real processes).
"""

from __future__ import annotations

import json

import pytest
from flwr.cli.config_utils import load_and_validate
from flwr.cli.utils import is_valid_name

from dermsynth.config import load_schema
from dermsynth.errors import ConfigError
from dermsynth.federated.client import hospital_options
from dermsynth.federated.launch import APP_FOLDER, app_folder, run_config, write_run_config
from dermsynth.federated.options import ROUND_KEYS, RoundSettings, TrainFederatedOptions, run_config_key
from dermsynth.federated.server import server_options

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser under its PyPI name (a dependency of flwr)
    import tomli as tomllib

REPO = APP_FOLDER.parents[3]
APP = tomllib.loads((APP_FOLDER / "pyproject.toml").read_text())
RUN_CONFIG = APP["tool"]["flwr"]["app"]["config"]
ROUNDS = {"rounds": 3, "local_steps": 2, "min_available_nodes": 2, "round_timeout_s": 60, "checkpoint_every": 1,
          "evaluate_every": 1}
TRAINING = {"batch": 4, "g_lr": 0.0025, "d_lr": 0.0025, "r1_gamma": 1.0, "pl_weight": 2.0, "style_mixing_prob": 0.9,
            "ema_kimg": 10, "mirror": True, "augment": "noaug", "augment_p": 0.0, "ada_target": 0.6, "ada_kimg": 500,
            "seed": 7, "cuda_ops": "auto", "compile": False, "network": {"z_dim": 16}, "conditional": True}


def _options(**rounds) -> TrainFederatedOptions:
    return TrainFederatedOptions(run="fed", dataset="set", hospitals=["h1", "h2"], label_classes=["mel", "nv"],
                                 resolution=16, training=TRAINING, federation={**ROUNDS, **rounds},
                                 security={"tls": False, "supernode_auth": False, "secure_aggregation": False},
                                 runtime="deployment")


def _run_config(options_file, **changes) -> dict:
    """The app's defaults with the launcher's values for `options_file`, then `changes` (run-config names)."""
    return {**RUN_CONFIG, **run_config(_options(), options_file, "/tmp/out"), **changes}


def test_the_app_config_defaults_are_the_schemas():
    schema = load_schema()["$defs"]["federated_run"]["properties"]
    for key in ROUND_KEYS:
        default = schema[key].get("default")
        # no default in the schema (rounds: required; min_available_nodes: all hospitals): the app says 0, "not set"
        assert RUN_CONFIG[run_config_key(key)] == (0 if default is None else default), key
    paths = {"options", "out", "fingerprint", "lmdb", "federated-csv", "state-root", "device", "threads"}
    assert set(RUN_CONFIG) == paths | {run_config_key(k) for k in ROUND_KEYS}


def test_the_app_folder_is_a_flower_app_under_the_projects_licence():
    config, _ = load_and_validate(APP_FOLDER / "pyproject.toml")  # components resolve to dermsynth's apps
    assert config["tool"]["flwr"]["app"]["components"] == {"serverapp": "dermsynth.federated.app:server_app",
                                                          "clientapp": "dermsynth.federated.app:client_app"}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert APP["project"]["license"] == project["license"] == "Apache-2.0"
    assert is_valid_name(APP_FOLDER.name)[0]  # `flwr build` takes the folder's name as the app's
    # `flwr run` rewrites a pyproject.toml with [tool.flwr.federations] (Flower ≥ 1.23 keeps connections in
    # FLWR_HOME/config.toml): the repository's file must not have one
    assert "federations" not in APP["tool"]["flwr"]
    assert (APP_FOLDER / "README.md").is_file() and app_folder() == APP_FOLDER


def test_the_launchers_run_config_file_reads_back_as_written(tmp_path):
    values = _run_config(tmp_path / "o.json", threads=2, device="cuda")
    path = write_run_config(tmp_path / "run-config.toml", values)
    assert tomllib.loads(path.read_text()) == values
    assert set(values) == set(RUN_CONFIG)  # `flwr run` refuses a key the app does not declare


def test_the_server_takes_the_round_settings_of_the_run_config_and_they_must_be_the_files(tmp_path):
    options_file = _options().write(tmp_path)
    assert server_options(_run_config(options_file)).federation == _options().federation
    with pytest.raises(ConfigError, match=r"disagree on the round settings \(local_steps: 2 → 100\).*local-steps=2"):
        server_options(_run_config(options_file, **{"local-steps": 100}))
    with pytest.raises(ConfigError, match="`rounds` is 0"):
        server_options(_run_config(options_file, rounds=0))
    with pytest.raises(ConfigError, match="names no options file"):
        server_options(_run_config(options_file, options=""))
    # min-available-nodes 0: every hospital of the run
    assert RoundSettings.from_run_config({**RUN_CONFIG, "rounds": 1}, 3).min_available_nodes == 3


def test_a_hospital_reads_the_round_settings_from_the_run_config_once_per_process(tmp_path):
    options = _options()
    text = json.dumps(options.for_hospitals())
    assert "federation" not in json.loads(text)  # the train message does not repeat them
    config = _run_config(tmp_path / "o.json")
    first = hospital_options(text, config)
    assert first == options and first.federation.local_steps == 2
    assert hospital_options(text, dict(config)) is first  # parsed and validated once
    assert hospital_options(text, {**config, "local-steps": 5}).federation.local_steps == 5
    with pytest.raises(ConfigError, match="lacks local-steps"):
        hospital_options(text, {k: v for k, v in config.items() if k != "local-steps"})


def test_round_settings_are_checked_once_where_they_are_built():
    with pytest.raises(ConfigError, match=r"federated\.fed: .*local_steps = 0 is not an integer ≥ 1"):
        _options(local_steps=0)
    with pytest.raises(ConfigError, match="lack rounds"):
        RoundSettings.from_mapping({k: v for k, v in ROUNDS.items() if k != "rounds"}, "x")
    with pytest.raises(ConfigError, match="runtime = 'ray'"):
        TrainFederatedOptions(**{**_options().__dict__, "runtime": "ray"})
    loaded = TrainFederatedOptions.from_dict(json.loads(json.dumps(_options().to_dict())))
    assert isinstance(loaded.federation, RoundSettings) and loaded == _options()
