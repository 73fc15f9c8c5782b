"""Step options of the federated stage (see `dermsynth.options`). Light: the Snakefile imports this module.

| verb (rule) | options | reads |
|---|---|---|
| train-federated (train_federated) | `TrainFederatedOptions` | one `federated.<run>` section: training keys, round settings (`RoundSettings`), transport (`SecuritySettings`), runtime |
| train-gan (train_alone) | `HospitalAloneOptions` | the same run's training keys, as a `gans` entry limited to one hospital |
| evaluate-federated (evaluate_federated) | `EvaluateFederatedOptions` | the run's hospitals, its central generator, `evaluation` sample sizes |
| federated-table (federated_table) | `FederatedTableOptions` | the run's hospitals, `fid_threshold` |
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ConfigError
from ..config import federated_fine_tuning
from ..gan.options import TrainGanOptions, TrainingOptions
from ..labels import scheme_classes
from ..options import RESOURCE_KEYS, Section, Settings, StepOptions, entry, select

# The keys of a `gans` entry that configure the training step itself (`gan.options.TrainingOptions`, derived from it),
# plus the data keys a federated run shares with it. Anything else of the run section belongs to the federation.
TRAINING_KEYS = (*TrainingOptions.setting_names(), "conditional", "classes")
# The per-round settings of a federated run (`RoundSettings`): what the ServerApp and every ClientApp read, from
# Flower's run config (the app folder's `[tool.flwr.app.config]`, keys with `-` for `_`).
ROUND_KEYS = ("rounds", "local_steps", "min_available_nodes", "round_timeout_s", "checkpoint_every", "evaluate_every")
RUNTIMES = ("deployment", "simulation")
# How the launcher's Flower processes talk (`SecuritySettings`): TLS, SuperNode authentication, secure aggregation.
SECURITY_KEYS = ("tls", "supernode_auth", "secure_aggregation")
SECURE_AGGREGATION_UNAVAILABLE = (
    "Flower 1.42 has SecAgg+ only for its legacy strategy API (flwr.server.workflow.SecAggPlusWorkflow with a "
    "LegacyContext, flwr.client.mod.secaggplus_mod), not for the Message API this app uses (flwr.serverapp / "
    "flwr.clientapp have no SecAgg+ workflow or mod); docs/federated.md, 'Secure aggregation' says what it would take")
CURVE_KEYS = ("real_samples", "seed", "snapshot_samples", "kid_subset", "truncation_psi", "batch")


def run_hospitals(config: dict, run: str) -> list[str]:
    """The hospitals of federated run `run`: its `hospitals`, else every hospital of its dataset's federated split
    (sorted by name: the order of the client indices)."""
    spec = entry(config, "federated", run, "federated run")
    return sorted(spec.get("hospitals") or config["datasets"][spec["dataset"]]["federated"]["hospitals"])


def iterations_per_evaluation(spec: dict) -> int:
    """Training steps each hospital runs between two evaluated snapshots (`evaluate_every` × `local_steps`)."""
    return spec["evaluate_every"] * spec["local_steps"]


def run_config_key(key: str) -> str:
    """The name of a round setting in Flower's run config (`local_steps` → `local-steps`, Flower's spelling)."""
    return key.replace("_", "-")


def _round_setting_problem(key: str, value) -> str | None:
    """What is wrong with `value` as round setting `key` (None: nothing)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if key == "round_timeout_s":
        return None if number and value > 0 else f"round_timeout_s = {value!r} is not a positive number of seconds"
    return None if number and isinstance(value, int) and value >= 1 else f"{key} = {value!r} is not an integer ≥ 1"


@dataclass(frozen=True)
class RoundSettings(Settings):
    """The per-round settings of a federated run, typed: `rounds` — FedAvg aggregations; `local_steps` — training
    iterations each hospital runs per round (batches of `training.batch` images); `min_available_nodes` —
    hospitals that must answer for a round to count; `round_timeout_s` — seconds the server waits for the replies
    of one round; `checkpoint_every`, `evaluate_every` — rounds between server checkpoints and between kept
    snapshots of the global model.

    One value per process, parsed and validated once: where the options are built or loaded
    (`TrainFederatedOptions`) and, in the Flower apps, from the run config (`from_run_config`: the ServerApp
    once, each ClientApp process once). The schema (`$defs/federated_run`) holds their defaults; the app folder's
    `[tool.flwr.app.config]` repeats them (tests/test_flower_app.py keeps the two equal).

    Raises ConfigError naming the setting when a count is not an integer ≥ 1 or the timeout not a positive
    number."""

    schema_section = "federated.*"

    rounds: int
    local_steps: int
    min_available_nodes: int
    round_timeout_s: float
    checkpoint_every: int
    evaluate_every: int

    def __post_init__(self):
        problems = [p for key in ROUND_KEYS if (p := _round_setting_problem(key, getattr(self, key)))]
        if problems:
            raise ConfigError(f"federated round settings: {'; '.join(problems)}")

    @classmethod
    def from_mapping(cls, data: Mapping, origin: str) -> "RoundSettings":
        """From a dict with exactly the keys `ROUND_KEYS` (a config section's or an options file's). Raises
        ConfigError naming `origin` and the missing, unknown or invalid keys."""
        return _from_exact_keys(cls, data, ROUND_KEYS, "the federated round settings", origin)

    @classmethod
    def from_run_config(cls, run_config: Mapping, hospitals: int) -> "RoundSettings":
        """From Flower's run config (`context.run_config`: `rounds`, `local-steps`, …; the app folder's defaults
        unless `flwr run --run-config` overrides them). `min-available-nodes` 0 means all `hospitals` (a count).
        Raises ConfigError when a key is absent (an app folder of another dermsynth version), `rounds` is 0 (the
        app's "not set") or a value is invalid."""
        names = {key: run_config_key(key) for key in ROUND_KEYS}
        absent = [name for name in names.values() if name not in run_config]
        if absent:
            raise ConfigError(f"the run config lacks {', '.join(absent)}: run the app folder of this dermsynth "
                              "version (src/dermsynth/federated/flower-app)")
        if run_config[names["rounds"]] == 0:
            raise ConfigError("the run config's `rounds` is 0 (not set): pass the run's rounds, e.g. "
                              "flwr run ... --run-config 'rounds=4' (and its other round settings)")
        data = {key: run_config[name] for key, name in names.items()}
        data["min_available_nodes"] = data["min_available_nodes"] or hospitals
        return cls.from_mapping(data, "the run config")

    def to_run_config(self) -> dict:
        """The settings as Flower run-config entries (`local-steps` = …), for `flwr run --run-config`."""
        return {run_config_key(key): getattr(self, key) for key in ROUND_KEYS}

    def differences(self, other: "RoundSettings") -> list[str]:
        """`key: mine → other's` for every setting that differs."""
        return [f"{key}: {getattr(self, key)} → {getattr(other, key)}" for key in ROUND_KEYS
                if getattr(self, key) != getattr(other, key)]


@dataclass(frozen=True)
class SecuritySettings(Settings):
    """How a federated run's Flower processes talk, typed: `tls` — the SuperLink serves TLS with a certificate of
    the run's CA and every SuperNode and the `flwr` CLI verify it (off: plain text, allowed only on loopback);
    `supernode_auth` — only SuperNodes whose public keys the launcher registered may connect (Flower's SuperNode
    authentication; needs `tls`); `secure_aggregation` — the server learns only the weighted sum (SecAgg+): not
    available with the Message API of flwr 1.42 (`SECURE_AGGREGATION_UNAVAILABLE`).

    Raises ConfigError naming the setting when a value is not a boolean, `supernode_auth` is on without `tls`, or
    `secure_aggregation` is on."""

    schema_section = "federated.*"

    tls: bool
    supernode_auth: bool
    secure_aggregation: bool

    def __post_init__(self):
        wrong = [key for key in SECURITY_KEYS if not isinstance(getattr(self, key), bool)]
        if wrong:
            raise ConfigError(f"federated transport settings: {', '.join(wrong)} must be true or false")
        if self.supernode_auth and not self.tls:
            raise ConfigError("supernode_auth: true needs tls: true (Flower authenticates SuperNodes only over TLS)")
        if self.secure_aggregation:
            raise ConfigError(f"secure_aggregation: true is not available: {SECURE_AGGREGATION_UNAVAILABLE}")

    @classmethod
    def from_mapping(cls, data: Mapping, origin: str) -> "SecuritySettings":
        """From a dict with exactly the keys `SECURITY_KEYS` (an options file's). Raises ConfigError naming `origin`
        and the missing or unknown keys, or what `__post_init__` refuses."""
        return _from_exact_keys(cls, data, SECURITY_KEYS, "the transport settings", origin)


@dataclass(frozen=True)
class TrainFederatedOptions(StepOptions):
    """`dermsynth federated train` (rule train_federated): one federated StyleGAN2 run.

    Fields: `run` — the name under `federated`; `dataset`; `hospitals` — the taking part hospitals, sorted (a
    client's index is its position); `label_classes` — every class of the dataset's label scheme (a conditional
    generator has one input per class, the same at every hospital); `resolution` — image side in pixels;
    `training` — the training keys (`TRAINING_KEYS`: as a `gans` entry; `classes` only when set);
    `federation` — the round settings (`RoundSettings`; a dict of `ROUND_KEYS` is parsed into one on
    construction); `security` — TLS and SuperNode authentication (`SecuritySettings`; a dict of `SECURITY_KEYS`
    is parsed into one); `runtime` — how the launcher starts Flower: deployment | simulation.

    Raises ConfigError when `federation` is not valid round settings, `security` not valid transport settings (or
    asks for SuperNode authentication in the Simulation Runtime, which has no SuperNodes), `runtime` is not one
    of `RUNTIMES`, or `training` sets `init` or `freeze_d` (fine-tuning is central only)."""

    step = "train-federated"
    wildcards = ("run",)
    run: str
    dataset: str
    hospitals: list
    label_classes: list
    resolution: int
    training: Section
    federation: RoundSettings
    security: SecuritySettings
    runtime: str

    def __post_init__(self):
        if isinstance(self.federation, Mapping):
            object.__setattr__(self, "federation", RoundSettings.from_mapping(self.federation, f"federated.{self.run}"))
        elif not isinstance(self.federation, RoundSettings):
            raise ConfigError(f"federated.{self.run}: round settings must be a mapping, not {self.federation!r}")
        if isinstance(self.security, Mapping):
            object.__setattr__(self, "security", SecuritySettings.from_mapping(self.security, f"federated.{self.run}"))
        elif not isinstance(self.security, SecuritySettings):
            raise ConfigError(f"federated.{self.run}: transport settings must be a mapping, not {self.security!r}")
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"federated.{self.run}.runtime = {self.runtime!r} is not one of {', '.join(RUNTIMES)}")
        if self.security.supernode_auth and self.runtime == "simulation":
            raise ConfigError(f"federated.{self.run}: supernode_auth: true needs runtime: deployment (the Simulation "
                              "Runtime has no SuperNodes to authenticate)")
        fine_tuning = federated_fine_tuning(self.training, self.run)
        if fine_tuning:  # as the config check says it (an options file written by hand skips that check)
            raise ConfigError(f"federated.{self.run}: {fine_tuning}")
        super().__post_init__()

    @classmethod
    def from_config(cls, config: dict, run: str) -> "TrainFederatedOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        spec = entry(config, "federated", run, "federated run")
        dataset = config["datasets"][spec["dataset"]]
        return cls(run=run, dataset=spec["dataset"], hospitals=run_hospitals(config, run),
                   label_classes=list(scheme_classes(dataset["labels"])), resolution=dataset["resolution"],
                   training=select(spec, TRAINING_KEYS),
                   federation=RoundSettings.from_section(spec, f"federated.{run}"),
                   security=SecuritySettings.from_mapping(select(spec, SECURITY_KEYS), f"federated.{run}"),
                   runtime=spec["runtime"])

    def training_settings(self) -> TrainingOptions:
        """The typed training settings of every trainer of the run, hospitals and server alike
        (`TrainingOptions.from_section` of `training`; ConfigError naming a key it lacks)."""
        return TrainingOptions.from_section(self.training, where=f"train-federated {self.run} options' training")

    def to_dict(self) -> dict:
        """Plain JSON-ready dict of the fields (`federation` and `security` as dicts of `ROUND_KEYS`,
        `SECURITY_KEYS`)."""
        return {**super().to_dict(), "federation": dataclasses.asdict(self.federation),
                "security": dataclasses.asdict(self.security)}

    def for_hospitals(self) -> dict:
        """What a train message tells each hospital (`to_dict` less `federation`: the hospitals read the round
        settings from Flower's run config, `RoundSettings.from_run_config`)."""
        return {key: value for key, value in self.to_dict().items() if key != "federation"}

    @classmethod
    def from_hospital_message(cls, data: dict, settings: RoundSettings) -> "TrainFederatedOptions":
        """The run's options at a hospital: `for_hospitals()` of the server's options (a dict) and the round
        settings of the run config. Raises ConfigError when the fields are not this version's."""
        return cls.from_dict({**data, "federation": settings}, origin="the server's train message")


@dataclass(frozen=True)
class HospitalAloneOptions(TrainGanOptions):
    """`dermsynth gan train` for a hospital-alone baseline (rule train_alone): the run's generator trained on one
    hospital's images only, for as many steps as each hospital runs in the federation (rounds × local_steps), with
    a snapshot at every evaluated round. The same verb and fields as `TrainGanOptions` (`gan` is
    `<run>-alone-<hospital>`; `spec` a `gans` entry with `hospital` and `kimg`/`snapshot_kimg` derived)."""

    wildcards = ("run", "hospital")

    @classmethod
    def from_config(cls, config: dict, run: str, hospital: str) -> "HospitalAloneOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        spec = entry(config, "federated", run, "federated run")
        if hospital not in run_hospitals(config, run):
            raise ConfigError(f"federated run '{run}' has no hospital '{hospital}' "
                              f"(hospitals: {', '.join(run_hospitals(config, run))})")
        steps, batch = spec["rounds"] * spec["local_steps"], spec["batch"]
        pool = config["datasets"][spec["dataset"]]["federated"]["pool"]
        gan = {**select(spec, TRAINING_KEYS), "dataset": spec["dataset"], "splits": list(pool), "hospital": hospital,
               "kimg": steps * batch / 1000, "snapshot_kimg": iterations_per_evaluation(spec) * batch / 1000,
               "tick_kimg": spec["tick_kimg"]}
        return cls(gan=f"{run}-alone-{hospital}", spec=gan)


@dataclass(frozen=True)
class EvaluateFederatedOptions(StepOptions):
    """`dermsynth federated evaluate` (rule evaluate_federated): FID/KID of every evaluated snapshot of the
    federated run, of each hospital-alone baseline and of the central generator, against the real training images
    of each hospital and of all of them pooled.

    Fields: `run`; `dataset`; `hospitals`; `classes` (None: every class) — which real images; `central` — the
    central generator's name (None: none); `baselines` — whether hospital-alone models exist; `evaluation` — the
    `evaluation` keys `CURVE_KEYS` (`real_samples` per reference, `snapshot_samples` generated per snapshot, …)."""

    step = "evaluate-federated"
    wildcards = ("run",)
    run: str
    dataset: str
    hospitals: list
    classes: list | None
    central: str | None
    baselines: bool
    evaluation: Section

    @classmethod
    def from_config(cls, config: dict, run: str) -> "EvaluateFederatedOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        spec = entry(config, "federated", run, "federated run")
        return cls(run=run, dataset=spec["dataset"], hospitals=run_hospitals(config, run),
                   classes=spec.get("classes") or None, central=spec.get("central"), baselines=spec["baselines"],
                   evaluation=select(config["evaluation"], CURVE_KEYS))


@dataclass(frozen=True)
class FederatedTableOptions(StepOptions):
    """`dermsynth federated table` (rule federated_table): the study's comparison from the FID curves.

    Fields: `run`; `hospitals`; `fid_threshold` (None: the worst final FID of the federated and hospital-alone
    models); `local_steps` — iterations per hospital per round (to express progress in rounds)."""

    step = "federated-table"
    wildcards = ("run",)
    run: str
    hospitals: list
    fid_threshold: float | None
    local_steps: int

    @classmethod
    def from_config(cls, config: dict, run: str) -> "FederatedTableOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        spec = entry(config, "federated", run, "federated run")
        return cls(run=run, hospitals=run_hospitals(config, run), fid_threshold=spec["fid_threshold"],
                   local_steps=spec["local_steps"])


__all__ = ["EvaluateFederatedOptions", "FederatedTableOptions", "HospitalAloneOptions", "RoundSettings",
           "SecuritySettings", "TrainFederatedOptions", "RESOURCE_KEYS", "ROUND_KEYS", "SECURITY_KEYS", "iterations_per_evaluation", "run_config_key",
           "run_hospitals"]


def _from_exact_keys(cls, data: dict, keys: tuple, what: str, origin: str):
    """`cls(**data)` when `data` has exactly `keys`; else ConfigError naming `origin`, `what`, the missing and the
    unknown keys; a ConfigError of `cls` itself is prefixed with `origin`."""
    missing, unknown = sorted(set(keys) - set(data)), sorted(set(data) - set(keys))
    if missing or unknown:
        raise ConfigError(f"{origin}: {what} lack {', '.join(missing) or 'nothing'} and have unknown keys "
                          f"{', '.join(unknown) or 'none'} (expected: {', '.join(keys)})")
    try:
        return cls(**{key: data[key] for key in keys})
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
