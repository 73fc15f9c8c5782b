"""The metrics stage's contract: step options hold exactly what each verb reads (rerun scope by construction),
the extractor and metric registries, the real-feature cache keyed by the extractors' preprocessing, and the
verbs giving the same result by hand (--config) and from the workflow's --options file."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import yaml

from dermsynth.config import validate_config
from dermsynth.errors import ConfigError
from dermsynth.metrics import registry
from dermsynth.metrics.options import (EVALUATE_GAN_EXTRACTORS, GAN_CURVE_EXTRACTORS, EvaluateGanOptions,
                                       GanCurveOptions, RealFeaturesOptions, reference_name)
from dermsynth.options import OptionError

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*:UserWarning")


@pytest.fixture(scope="module")
def workflow_cfg(demo_root):
    from .conftest import demo_config
    return validate_config(demo_config(demo_root), workflow=True)


def _digests(cfg: dict) -> dict:
    return {"evaluate": EvaluateGanOptions.from_config(cfg, gan="cgan").digest,
            "curve": GanCurveOptions.from_config(cfg, gan="cgan").digest,
            "real": RealFeaturesOptions.from_config(cfg, reference=reference_name(cfg, "cgan")).digest}


@pytest.mark.parametrize("key, value, changed", [
    ("ppl_samples", 4, {"evaluate"}), ("fake_samples", 8, {"evaluate"}), ("k", 2, {"evaluate"}),
    ("copy_ratio", 0.2, {"evaluate"}), ("snapshot_samples", 8, {"curve"}),
    ("kid_subset", 8, {"evaluate", "curve"}), ("truncation_psi", 0.7, {"evaluate", "curve"}),
    ("batch", 4, {"evaluate", "curve"}), ("real_samples", 16, {"evaluate", "curve", "real"}),
    ("seed", 1, {"evaluate", "curve", "real"}),
    ("table1_gans", ["cgan"], set()), ("snapshots", False, set()), ("gpus", 1, set()), ("runtime_hours", 2, set()),
])
def test_each_evaluation_key_is_in_exactly_the_options_of_the_jobs_that_read_it(workflow_cfg, key, value, changed):
    before = _digests(workflow_cfg)
    cfg = copy.deepcopy(workflow_cfg)
    cfg["evaluation"][key] = value
    after = _digests(cfg)
    assert {job for job in before if before[job] != after[job]} == changed


def test_a_generator_setting_other_than_its_real_images_reruns_no_evaluation(workflow_cfg):
    cfg = copy.deepcopy(workflow_cfg)
    cfg["gans"]["cgan"]["kimg"] = 2  # training re-runs (and so the evaluation, through its input), not the options
    assert _digests(cfg) == _digests(workflow_cfg)
    cfg["gans"]["cgan"]["classes"] = ["benign"]
    assert all(_digests(cfg)[job] != _digests(workflow_cfg)[job] for job in ("evaluate", "curve", "real"))


def test_options_hold_only_what_is_read_and_a_missing_key_is_an_error_at_once(workflow_cfg):
    options = GanCurveOptions.from_config(workflow_cfg, gan="cgan")
    assert set(options.evaluation) == {"real_samples", "seed", "snapshot_samples", "kid_subset", "truncation_psi",
                                       "batch"}
    with pytest.raises(OptionError, match="evaluation.fake_samples is not in this step's options"):
        options.evaluation["fake_samples"]
    with pytest.raises(AttributeError):
        options.kimg
    with pytest.raises(ConfigError, match="gan 'nope' is not defined under 'gans'"):
        EvaluateGanOptions.from_config(workflow_cfg, gan="nope")
    with pytest.raises(ConfigError, match="real reference 'isic-0' is not the reference of any generator"):
        RealFeaturesOptions.from_config(workflow_cfg, reference="isic-0")


def test_generators_with_the_same_real_images_share_one_reference(workflow_cfg):
    names = {gan: reference_name(workflow_cfg, gan) for gan in workflow_cfg["gans"]}
    assert names["cgan"] == names["cgan_no_aug"] == names["cgan_no_color"] != names["ben_gan"] != names["mal_gan"]
    assert len(set(names.values())) == 4 and all(name.startswith(workflow_cfg["gans"][g]["dataset"] + "-")
                                                   for g, name in names.items())
    real = RealFeaturesOptions.from_config(workflow_cfg, reference=names["ben_gan"])
    assert real.classes == ["benign"] and set(real.extractors) == set(EVALUATE_GAN_EXTRACTORS)
    assert real.extractors["vgg16"] == registry.extractor_info("vgg16").preprocessing


# --- registries ----------------------------------------------------------------------------------------------
def test_every_metric_is_registered_with_an_options_object_and_registered_feature_spaces():
    for name in ("fid", "kid", "precision_recall", "alpha_beta", "authenticity", "ppl"):
        info = registry.metric(name)
        assert dataclasses.is_dataclass(info.options) and info.options.__dataclass_params__.frozen
        assert info.kind == ("generator" if name == "ppl" else "features")
    assert set(registry.metric_extractors(["fid", "kid"])) == set(GAN_CURVE_EXTRACTORS)
    assert set(registry.metric_extractors(["fid", "kid", "precision_recall", "alpha_beta", "authenticity"])) \
        == set(EVALUATE_GAN_EXTRACTORS) <= set(registry.EXTRACTORS)
    with pytest.raises(ConfigError, match="metric 'is' is not registered"):
        registry.metric("is")
    with pytest.raises(ConfigError, match="not defined in vgg16 features"):
        registry.compute_metric("fid", "vgg16", np.zeros((2, 2)), np.zeros((2, 2)), registry.metric("fid").options())


def test_registered_metrics_are_the_metric_functions():
    from dermsynth.metrics import generative
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(40, 8)), rng.normal(size=(30, 8)) + 0.3
    options = registry.metric("kid").options(subset_size=20)
    assert registry.compute_metric("kid", "lite0", real, fake, options) == {
        "kid_lite0": generative.kid(real, fake, subset_size=20), "kid_lite0_percent": generative.kid(real, fake,
                                                                                                    subset_size=20) * 100}
    assert registry.compute_metric("fid", "inception", real, fake, registry.metric("fid").options()) == {
        "fid": generative.fid(real, fake), "fid_rank_deficient": False}
    k3 = registry.metric("precision_recall").options(k=3)
    assert tuple(registry.compute_metric("precision_recall", "vgg16", real, fake, k3).values()) \
        == generative.precision_recall(real, fake, k=3)


def test_a_new_extractor_registers_and_is_built_with_its_preprocessing():
    from dermsynth.metrics.extractors import Extractor

    @registry.register_extractor("test_mean", preprocessing={"resize": "none", "normalisation": "x / 255"})
    def build(cache=None):
        return Extractor("test_mean", _Mean(), "random-init(seed=0)", 8, 3)
    try:
        net = registry.create_extractor("test_mean")
        assert net.preprocessing == {"resize": "none", "normalisation": "x / 255"}
        assert net.features(torch.full((2, 3, 8, 8), 255, dtype=torch.uint8)).tolist() == [[1.0] * 3] * 2
    finally:
        registry.EXTRACTORS.pop("test_mean")
    with pytest.raises(ConfigError, match="feature extractor 'test_mean' is not registered"):
        registry.create_extractor("test_mean")


class _Mean(torch.nn.Module):
    def forward(self, x):
        return x.float().mean(dim=(2, 3)) / 255


def test_the_feature_cache_key_includes_the_extractors_preprocessing(tmp_path):
    from dermsynth.metrics.evaluate import cached_real_features
    from dermsynth.metrics.extractors import Extractor
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    loads = []

    def load():
        loads.append(1)
        return images
    identity = {"dataset": "d", "split": "train", "keys": "k", "count": 4}
    net = Extractor("mean", _Mean(), "random-init(seed=0)", 8, 3, preprocessing={"resize": "none"})
    first = cached_real_features(tmp_path, identity, net, load)
    assert np.array_equal(cached_real_features(tmp_path, identity, net, load), first) and len(loads) == 1
    changed = Extractor("mean", _Mean(), "random-init(seed=0)", 8, 3, preprocessing={"resize": "8×8 bicubic"})
    cached_real_features(tmp_path, identity, changed, load)
    assert len(loads) == 2 and len(list(tmp_path.iterdir())) == 2


def test_fetch_weights_default_is_the_one_list_of_timm_models():
    from dermsynth.cli import build_parser
    from dermsynth.metrics import extractors
    args = build_parser().parse_args(["fetch-weights"])
    assert tuple(args.timm) == registry.DEFAULT_TIMM_MODELS == extractors.DEFAULT_TIMM_MODELS
    assert "resnet34" in registry.DEFAULT_TIMM_MODELS  # the e4e/HyperStyle backbone


# --- the verbs: by hand and from the workflow's options file ---------------------------------------------------
def test_real_features_by_hand_and_by_options_give_the_same_files(gan_setup, tmp_path, capsys):
    """`dermsynth metrics real-features --config C --reference R` and `--options F` (what the workflow passes) write the
    same features, which evaluate-gan then reads instead of extracting again."""
    from dermsynth.cli import main
    cfg, lmdb, manifest = gan_setup
    cfg = copy.deepcopy(cfg)
    cfg["evaluation"]["real_samples"] = 6
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    reference = reference_name(cfg, "tiny")
    common = ["--lmdb", str(lmdb), "--manifest", str(manifest), "--device", "cpu"]
    assert main(["metrics", "real-features", "--config", str(config_file), "--reference", reference, *common,
                 "--out", str(tmp_path / "by-hand")]) == 0
    options = RealFeaturesOptions.from_config(cfg, reference=reference).write(tmp_path / "options")
    assert main(["metrics", "real-features", "--options", options, *common, "--out", str(tmp_path / "by-options")]) == 0
    for name in EVALUATE_GAN_EXTRACTORS:
        a, b = np.load(tmp_path / "by-hand" / f"{name}.npz"), np.load(tmp_path / "by-options" / f"{name}.npz")
        assert np.array_equal(a["features"], b["features"]) and str(a["identity"]) == str(b["identity"])
        assert a["features"].shape[0] == 6 and "preprocessing" in str(a["identity"])

    from dermsynth.metrics.gan_eval import (feature_networks, real_features, real_reference,
                                            reference_identity)
    frame = real_reference(manifest, ["train"], None, 6, cfg["evaluation"]["seed"])
    identity = reference_identity("ham10000", ["train"], None, lmdb, frame)
    nets = feature_networks(GAN_CURVE_EXTRACTORS)
    loaded = real_features(lmdb, frame, identity, nets, "cpu", tmp_path / "cache", tmp_path / "by-options")
    assert not (tmp_path / "cache").exists()  # read from the job's files, nothing extracted
    assert np.array_equal(loaded[nets["inception"].name], np.load(tmp_path / "by-hand" / "inception.npz")["features"])
    other = real_reference(manifest, ["train"], None, 5, cfg["evaluation"]["seed"])  # not the job's image set
    fresh = real_features(lmdb, other, reference_identity("ham10000", ["train"], None, lmdb, other), nets, "cpu",
                          tmp_path / "cache", tmp_path / "by-options")
    assert len(fresh[nets["lite0"].name]) == 5 and not (tmp_path / "cache").exists()  # extracted, nothing written
    assert "is not of this image set" in capsys.readouterr().err
