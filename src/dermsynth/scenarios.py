"""Classifier scenario names: one constructor (`Scenario.name`, `study_scenarios`) and one parser (`parse`).

A scenario says what a classifier is trained on. Its name is a folder (results/classifiers/<study>/<scenario>/
<arch>/), a wildcard of the workflow, the `scenario` of metrics.json and a row of the studies' tables:

HAM10000 study (Tables 2 and 3):
  baseline          the real training images only
  <size>            + the synthetic set <size> (a key of `synthetic.sizes`, e.g. SA-2k)
  <size>-filter     + that set less the images the <size> model misclassifies
ISIC study (Table 2, §4.3, §5):
  baseline
  <family>-synth    synthetic images only, both classes (a family of `classifiers.isic.generators`)
  <family>-aug      + synthetic malignant images
  aug-edge          + neighbours in W of the validation edge cases and baseline mistakes (`classifiers.isic.edge`)
  frameless-synth   synthetic images only, their frames removed (`explain.frames`)

A core module (docs/architecture.md, "Layers"): config validation (`dermsynth.config`), the workflow's planning
and the classify and explain stages read it. Light: no torch, no pandas.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

# Scenario kinds.
BASELINE, SA, SA_FILTER = "baseline", "sa", "sa-filter"
SYNTH, AUG, EDGE, FRAMELESS = "synth", "aug", "edge", "frameless"
KINDS = (BASELINE, SA, SA_FILTER, SYNTH, AUG, EDGE, FRAMELESS)
STUDY_KINDS = {"ham10000": (BASELINE, SA, SA_FILTER), "isic": (BASELINE, SYNTH, AUG, EDGE, FRAMELESS)}
# The kinds of an ISIC synthetic set (results/synthetic/isic/<family>-<kind>/), named as their scenarios.
ISIC_SET_KINDS = (SYNTH, AUG)
# The names that hold no set or family; `<size>-filter` is the filtered twin of `<size>`.
FIXED_NAMES = {BASELINE: "baseline", EDGE: "aug-edge", FRAMELESS: "frameless-synth"}
FILTER_SUFFIX = "-filter"
FORMS = "baseline, <size>, <size>-filter, <family>-synth, <family>-aug, aug-edge or frameless-synth"


@dataclass(frozen=True)
class Scenario:
    """One classifier scenario: its `kind` (one of `KINDS`), the synthetic set `size` it adds (a key of
    `synthetic.sizes`; kinds SA and SA_FILTER only) and the ISIC generator `family` (kinds SYNTH and AUG only).

    Raises ConfigError (one line) for an unknown kind, a missing or extra part, or a part that cannot be a folder
    name (empty, holding '/' or whitespace)."""

    kind: str
    size: str | None = None
    family: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown scenario kind {self.kind!r} (kinds: {', '.join(KINDS)})")
        for part, kinds in (("size", (SA, SA_FILTER)), ("family", ISIC_SET_KINDS)):
            value = getattr(self, part)
            if (self.kind in kinds) != (value is not None):
                raise ConfigError(f"a scenario of kind {self.kind!r} {'needs' if value is None else 'takes no'} {part}")
            if value is not None and (not value or "/" in value or any(c.isspace() for c in value)):
                raise ConfigError(f"scenario {part} {value!r} cannot be part of a scenario name (a folder name: "
                                  "not empty, no '/', no spaces)")

    @classmethod
    def sa(cls, size: str, filtered: bool = False) -> "Scenario":
        """HAM10000 scenario `<size>` (real + the synthetic set `size`), or `<size>-filter` when `filtered`."""
        return cls(SA_FILTER if filtered else SA, size=size)

    @classmethod
    def isic(cls, family: str, kind: str) -> "Scenario":
        """ISIC scenario `<family>-<kind>` of a generator family; `kind` one of `ISIC_SET_KINDS`."""
        return cls(kind, family=family)

    @property
    def name(self) -> str:
        """The scenario's name (the one constructor of a name); `parse(name)` gives the scenario back."""
        if self.kind in FIXED_NAMES:
            return FIXED_NAMES[self.kind]
        if self.kind in ISIC_SET_KINDS:
            return f"{self.family}-{self.kind}"
        return self.size + (FILTER_SUFFIX if self.kind == SA_FILTER else "")

    @property
    def synthetic_only(self) -> bool:
        """True when the model trains on synthetic images alone (no real training images): -synth scenarios."""
        return self.kind in (SYNTH, FRAMELESS)

    @property
    def adds_synthetic(self) -> bool:
        """True when the model's training set holds synthetic images (every scenario but the baseline)."""
        return self.kind != BASELINE

    def __str__(self) -> str:
        return self.name


def parse(name: str, study: str | None = None, config: dict | None = None) -> Scenario:
    """The scenario named `name` (the one parser of a name): the fixed names first, then `<family>-synth`,
    `<family>-aug`, `<size>-filter`, and any other name is the SA set `<size>`.

    With `study` (ham10000 or isic), the scenario must be of a kind that study trains (`STUDY_KINDS`); with `config`
    too (a validated workflow config), one of the scenarios that config plans for it (`study_scenarios`).
    Raises ConfigError (one line) for a name of no scenario, of another study, or not planned by `config`."""
    scenario = _read(name)
    if study is None:
        return scenario
    if study not in STUDY_KINDS:
        raise ConfigError(f"unknown study {study!r} (studies: {', '.join(STUDY_KINDS)})")
    if scenario.kind not in STUDY_KINDS[study]:
        raise ConfigError(f"scenario {name!r} is not a scenario of the {study} study")
    if config is not None and scenario not in study_scenarios(config, study):
        known = ", ".join(scenario_names(config, study)) or "none"
        raise ConfigError(f"scenario {name!r} is not a {study} scenario of this config (scenarios: {known})")
    return scenario


def _read(name: str) -> Scenario:
    """The scenario of `name` by its form alone; ConfigError naming the forms when it has none."""
    try:
        for kind, fixed in FIXED_NAMES.items():
            if name == fixed:
                return Scenario(kind)
        for kind in ISIC_SET_KINDS:
            if name.endswith(f"-{kind}"):
                return Scenario.isic(name[: -len(kind) - 1], kind)
        if name.endswith(FILTER_SUFFIX):
            return Scenario.sa(name[: -len(FILTER_SUFFIX)], filtered=True)
        return Scenario.sa(name)
    except ConfigError:
        raise ConfigError(f"{name!r} is not a scenario name ({FORMS})") from None


def synthetic_sets(config: dict) -> list[str]:
    """The SA sets the workflow draws (`synthetic.sizes` keys, file order): every one when it inverts images into
    a generator (`latent.inversion.gans`, the transformations' source), else none."""
    return list(config["synthetic"]["sizes"]) if config["latent"]["inversion"]["gans"] else []


def ham_sizes(config: dict) -> list[str]:
    """The SA sets the HAM10000 classifiers train with: `classifiers.ham10000.synthetic`, else `synthetic_sets`."""
    return list(config["classifiers"]["ham10000"].get("synthetic") or synthetic_sets(config))


def study_scenarios(config: dict, study: str) -> list[Scenario]:
    """The scenarios a validated workflow `config` trains for `study`, in the tables' order.

    ham10000: baseline, each of `ham_sizes`, then their `-filter` twins when `classifiers.ham10000.filtered`.
    isic (none when `classifiers.isic.enabled` is false): baseline, `<family>-synth` and `<family>-aug` per family
    of `classifiers.isic.generators`, aug-edge when `classifiers.isic.edge.enabled`, frameless-synth when
    `explain.frames.gan` is set. Raises ConfigError for an unknown study or a set/family name that cannot be
    part of a name."""
    if study == "ham10000":
        sizes, filtered = ham_sizes(config), config["classifiers"]["ham10000"]["filtered"]
        return ([Scenario(BASELINE)] + [Scenario.sa(size) for size in sizes]
                + ([Scenario.sa(size, filtered=True) for size in sizes] if filtered else []))
    if study != "isic":
        raise ConfigError(f"unknown study {study!r} (studies: {', '.join(STUDY_KINDS)})")
    isic = config["classifiers"]["isic"]
    if not isic["enabled"]:
        return []
    scenarios = [Scenario(BASELINE)] + [Scenario.isic(family, kind) for family in isic["generators"]
                                        for kind in ISIC_SET_KINDS]
    scenarios += [Scenario(EDGE)] if isic["edge"]["enabled"] else []
    return scenarios + ([Scenario(FRAMELESS)] if config["explain"]["frames"]["gan"] else [])


def scenario_names(config: dict, study: str) -> list[str]:
    """The names of `study_scenarios(config, study)`."""
    return [scenario.name for scenario in study_scenarios(config, study)]


def authenticity_classifier(config: dict) -> tuple[str, str | None]:
    """(scenario name, architecture) of the ISIC classifier the authenticity stage embeds images with:
    `explain.authenticity.classifier` and `.architecture` (null: the first of `classifiers.isic.architectures`;
    None when there is none)."""
    authenticity = config["explain"]["authenticity"]
    first = next(iter(config["classifiers"]["isic"]["architectures"]), None)
    return authenticity["classifier"], authenticity.get("architecture") or first


def edge_classifier(config: dict) -> tuple[str, str | None]:
    """(scenario name, architecture) of the classifier whose margins define aug-edge's edge cases:
    `classifiers.isic.edge.classifier` and `.architecture`, each null → `authenticity_classifier`'s."""
    edge = config["classifiers"]["isic"]["edge"]
    scenario, architecture = authenticity_classifier(config)
    return edge["classifier"] or scenario, edge["architecture"] or architecture


def name_problems(config: dict) -> list[str]:
    """Scenario names of a validated workflow `config` that would not read back as their scenario (a synthetic
    set named like another scenario, e.g. `cgan-aug`; a family `frameless` beside frameless-synth), or that
    cannot be a name at all: one line each, naming the key to change."""
    problems = []
    keys = {"ham10000": "classifiers.ham10000.synthetic" if config["classifiers"]["ham10000"].get("synthetic")
            else "synthetic.sizes", "isic": "classifiers.isic.generators"}
    for study, key in keys.items():
        try:
            scenarios = study_scenarios(config, study)
        except ConfigError as error:
            problems.append(f"'{key}': {error}")
            continue
        for scenario in scenarios:
            if not _reads_back(scenario):
                part = f"synthetic set {scenario.size!r}" if scenario.size else f"generator family {scenario.family!r}"
                problems.append(f"'{key}': the {part} gives the scenario name {scenario.name!r}, which reads as "
                                f"another scenario ({FORMS}); rename it")
    return problems


def _reads_back(scenario: Scenario) -> bool:
    """Whether `parse` gives `scenario` back from its name."""
    try:
        return _read(scenario.name) == scenario
    except ConfigError:
        return False
