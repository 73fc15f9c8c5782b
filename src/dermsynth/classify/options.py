"""Step options of the classify stage (see `dermsynth.options`): `train-classifier` and `isic-synthetic`.
(`filter-synthetic`, `classifier-tables` and `isic-table2` read no configuration.)"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..options import Section, StepOptions, entry
from ..scenarios import EDGE, ISIC_SET_KINDS, Scenario


@dataclass(frozen=True)
class TrainClassifierOptions(StepOptions):
    """`dermsynth classify train` (rules classifier_sa and classifier): one model of one study.

    Fields: `study` — ham10000 or isic (a name under `classifiers`); `scenario` — baseline, SA-<n>,
    SA-<n>-filter (HAM10000) or <family>-synth / <family>-aug (ISIC), recorded in metrics.json; `arch` — the
    architecture (a timm model name or one registered in `classify.models`); `recipe` — that study's
    `classifiers.<study>.recipe` (input_resolution px, batch, epochs, patience, lr, weight_decay, dropout,
    oversample, augment, monitor, workers, pretrained, seed; schema defaults filled by the workflow).
    Nothing else of the study's section: changing the HAM10000 recipe re-runs only the HAM10000 models."""

    step = "train-classifier"
    wildcards = ("study", "scenario", "arch")
    study: str
    scenario: str
    arch: str
    recipe: Section

    @classmethod
    def from_config(cls, config: dict, study: str, scenario: str, arch: str) -> "TrainClassifierOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        settings = entry(config, "classifiers", study, "study")
        return cls(study=study, scenario=scenario, arch=arch, recipe=settings["recipe"])


@dataclass(frozen=True)
class IsicSyntheticOptions(StepOptions):
    """`dermsynth classify isic-synthetic` (rule isic_synthetic): one ISIC study synthetic set.

    Fields: `family` — a name under `classifiers.isic.generators` (the generators themselves are the job's
    inputs); `kind` — `synth` (balanced, synthetic only) or `aug` (malignant images added to the real ones);
    `images` — the set's size: `classifiers.isic.synth_images` for synth (split equally between benign and
    malignant), `classifiers.isic.aug_malignant` for aug; `truncation_psi` — the generators' truncation ψ
    (1.0: none). A synth set does not hold `aug_malignant`, so changing it re-runs only the aug sets."""

    step = "isic-synthetic"
    wildcards = ("family", "kind")
    family: str
    kind: str
    images: int
    truncation_psi: float

    @classmethod
    def from_config(cls, config: dict, family: str, kind: str) -> "IsicSyntheticOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        isic = config["classifiers"]["isic"]
        entry(isic, "generators", family, "classifiers.isic generator family")
        if kind not in ISIC_SET_KINDS:
            raise ConfigError(f"unknown ISIC synthetic kind '{kind}' (synth or aug)")
        images = isic["synth_images"] if kind == "synth" else isic["aug_malignant"]
        return cls(family=family, kind=kind, images=images, truncation_psi=isic["truncation_psi"])


EDGE_SCENARIO = Scenario(EDGE).name  # aug-edge: real images + neighbours of the validation edge cases and mistakes


def edge_case_count(config: dict) -> int:
    """`classifiers.isic.edge.edge_cases`, or the authenticity stage's `explain.authenticity.edge_cases` when null."""
    return config["classifiers"]["isic"]["edge"].get("edge_cases") or config["explain"]["authenticity"]["edge_cases"]


@dataclass(frozen=True)
class EdgeNeighboursOptions(StepOptions):
    """`dermsynth classify edge-neighbours` (rule edge_neighbours): the training images of ISIC scenario aug-edge.

    The validation split's edge cases (the `edge_cases` smallest margins between the two most probable classes of
    the edge classifier, the authenticity stage's definition) and the validation images the baseline
    misclassifies (at most `misclassified`, a seeded choice; None: all) are projected into the generator (`steps`
    optimisation steps in `space` w or w+, `batch` images at once, `w_avg_samples` for the mean w), and
    `neighbors` latents at exactly `distance` (Euclidean, on every W layer) around each projection are rendered
    and labelled with their source image's class; `seed` seeds the choice, the projection and the directions.
    The classifiers and the generator are the job's inputs. From `classifiers.isic.edge` (edge_cases: null →
    `explain.authenticity.edge_cases`)."""

    step = "edge-neighbours"
    edge_cases: int
    misclassified: int | None
    neighbors: int
    distance: float
    steps: int
    space: str
    batch: int
    w_avg_samples: int
    seed: int

    @classmethod
    def from_config(cls, config: dict) -> "EdgeNeighboursOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        edge = config["classifiers"]["isic"]["edge"]
        return cls(edge_cases=edge_case_count(config), misclassified=edge.get("misclassified"),
                   **{k: edge[k] for k in ("neighbors", "distance", "steps", "space", "batch", "w_avg_samples",
                                           "seed")})


@dataclass(frozen=True)
class IsicEdgeTableOptions(StepOptions):
    """`dermsynth classify isic-edge-table` (rule isic_edge_table): every ISIC model's accuracy and AUC on all test images,
    on the test edge cases and on the test images the baseline misclassifies.

    Field `edge_cases`: how many test edge cases (the smallest margins of the edge classifier, as for the
    validation images aug-edge is trained on; `classifiers.isic.edge.edge_cases`, null →
    `explain.authenticity.edge_cases`). The models, the edge classifier and the baseline are the job's inputs."""

    step = "isic-edge-table"
    edge_cases: int

    @classmethod
    def from_config(cls, config: dict) -> "IsicEdgeTableOptions":
        """This job's options from the validated workflow config (`StepOptions.from_config`)."""
        return cls(edge_cases=edge_case_count(config))
