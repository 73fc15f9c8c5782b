"""`dermsynth explain crp` and `dermsynth explain pcx` (the CLI the rules call) end to end on the demo HAM10000 LMDB, with model folders written here
(random-init resnet10t weights saved as `train-classifier` saves them, predictions chosen so that the
study's case — MEL called BKL by the baseline, MEL by the filtered SA model — exists)."""

import json
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from dermsynth.classify.train import Recipe, build_model
from dermsynth.cli import main
from dermsynth.config import schema_defaults, validate_config
from dermsynth.data.splits import split_dataset
from dermsynth.errors import ConfigError
from dermsynth.labels import SCHEMES

from .conftest import demo_config

CLASSES = list(SCHEMES["ham7"])


def _predictions(rows: pd.DataFrame, predicted: list[str]) -> pd.DataFrame:
    frame = rows[["key", "label"]].assign(predicted=predicted)
    for name in CLASSES:
        frame[f"p_{name}"] = [0.9 if p == name else 0.1 / 6 for p in predicted]
    return frame


def _model_folder(root, scenario, seed, manifest, mel_prediction):
    folder = root / scenario / "resnet10t"
    folder.mkdir(parents=True)
    recipe = Recipe.from_section({**schema_defaults("classifiers.ham10000.recipe"),  # as the workflow test config
                                  "input_resolution": 16, "pretrained": False, "seed": seed})
    model, weights = build_model("resnet10t", len(CLASSES), recipe)  # each folder its own weights: its seed's
    torch.save({"model": model.state_dict(), "epoch": 0, "architecture": "resnet10t", "classes": CLASSES,
                "recipe": json.dumps(asdict(recipe)), "weights": weights}, folder / "best.pt")
    for split in ("test", "validation"):
        rows = manifest[manifest["split"] == split]
        predicted = [mel_prediction if label == "mel" else label for label in rows["label"]]
        _predictions(rows, predicted).to_csv(folder / f"predictions-{split}.csv", index=False)
    (folder / "metrics.json").write_text(json.dumps({
        "scenario": scenario, "architecture": "resnet10t", "classes": CLASSES, "real_weights": False,
        "weights": weights, "data": "demo archives"}))
    return str(folder)


@pytest.fixture(scope="module")
def explained(ingested_ham, demo_root, tmp_path_factory):
    raw = demo_config(demo_root)
    raw["explain"]["crp"].update(concepts=2, references=2, reference_pool=8, images=2)
    raw["explain"]["pcx"].update(max_prototypes=2, concepts=3, prototype_images=2, references=1)
    cfg = validate_config(raw)
    ingested = pd.read_csv(ingested_ham / "ingested.csv", dtype=str, keep_default_na=False)
    manifest = split_dataset(ingested, cfg["datasets"]["ham10000"]["split"])
    root = tmp_path_factory.mktemp("explain")
    manifest.to_csv(root / "manifest.csv", index=False)
    folders = [_model_folder(root, "baseline", 0, manifest, "bkl"), _model_folder(root, "SA-2k", 1, manifest, "mel"),
               _model_folder(root, "SA-2k-filter", 2, manifest, "mel")]
    (root / "config.yaml").write_text(yaml.safe_dump(raw))
    common = ["--config", str(root / "config.yaml"), "--models", *folders, "--sizes", "SA-2k", "--lmdb",
              str(ingested_ham / "lmdb"), "--manifest", str(root / "manifest.csv"), "--device", "cpu"]
    weights = [torch.load(f"{folder}/best.pt", weights_only=True)["model"]["fc.weight"] for folder in folders]
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])  # three models
    assert main(["explain", "crp", *common, "--out", str(root / "crp")]) == 0       # as the workflow's rules call them
    assert main(["explain", "pcx", *common, "--crp", str(root / "crp"), "--out", str(root / "pcx")]) == 0
    summaries = [json.loads((root / kind / f"{kind}.json").read_text()) for kind in ("crp", "pcx")]
    return manifest, root, *summaries


def test_crp_explains_the_case_with_both_models_and_both_classes(explained):
    manifest, root, summary, _ = explained
    mel_test = manifest[(manifest["split"] == "test") & (manifest["label"] == "mel")]["key"]
    assert summary["selection"] == "case" and set(summary["explained_keys"]) <= set(mel_test)
    assert summary["models"]["augmented"]["scenario"] == "SA-2k-filter" and summary["real_weights"] is False
    assert summary["layer"] == "layer4" and summary["provenance"]["versions"]["torch"]
    table = pd.read_csv(root / "crp" / "crp.csv", dtype={"key": str})
    per_panel = table.groupby(["key", "model", "explained"]).size()
    assert len(per_panel) == 4 * len(summary["explained_keys"]) and (per_panel == 2).all()
    true_rows = table[table["explained"] == "true"]
    assert (true_rows["explained_class"] == "mel").all()
    cache = np.load(root / "crp" / "concepts-baseline.npz")
    assert cache["relevances"].shape == (len(cache["keys"]), 512)
    for name in ("crp.png", "crp-true.png"):
        assert (root / "crp" / name).stat().st_size > 5_000


def test_pcx_assigns_every_mel_test_image_or_flags_it(explained):
    manifest, root, _, summary = explained
    mel_test = manifest[(manifest["split"] == "test") & (manifest["label"] == "mel")]
    assignments = pd.read_csv(root / "pcx" / "pcx.csv", dtype={"key": str})
    for role, model in summary["models"].items():
        mine = assignments[assignments["model"] == role]
        assert sorted(mine["key"]) == sorted(mel_test["key"]) and model["test_images"] == len(mel_test)
        assert mine["prototype"].between(0, model["prototypes"] - 1).all()
        assert (root / "pcx" / f"pcx-{role}.png").stat().st_size > 3_000
    matrix = pd.read_csv(root / "pcx" / "prototypes.csv")
    assert set(matrix["model"]) == {"baseline", "augmented"}
    assert summary["real_weights"] is False and summary["provenance"]["config"]["pcx"]["class"] == "mel"


def test_pcx_by_options_gives_what_it_gives_by_hand(explained, ingested_ham):
    """The workflow's way (`--options`, the file `PcxOptions` writes) and by hand (`--config`): the same tables."""
    from dermsynth.explain.options import PcxOptions
    _, root, _, _ = explained
    cfg = validate_config(yaml.safe_load((root / "config.yaml").read_text()))
    options = PcxOptions.from_config(cfg)
    folders = [str(root / scenario / "resnet10t") for scenario in ("baseline", "SA-2k", "SA-2k-filter")]
    assert main(["explain", "pcx", "--options", options.write(root / "options"), "--models", *folders, "--sizes", "SA-2k",
                 "--crp", str(root / "crp"), "--lmdb", str(ingested_ham / "lmdb"), "--manifest",
                 str(root / "manifest.csv"), "--device", "cpu", "--out", str(root / "pcx-options")]) == 0
    for name in ("pcx.csv", "prototypes.csv"):
        assert (root / "pcx" / name).read_bytes() == (root / "pcx-options" / name).read_bytes(), name
    summary = json.loads((root / "pcx-options" / "pcx.json").read_text())
    assert summary["provenance"]["config"] == options.to_dict()


def test_explain_options_hold_what_their_verbs_read(demo_cfg):
    """Each verb's options: its settings only (a key re-runs exactly its readers); job resources never."""
    import copy

    from dermsynth.explain.options import AuthenticityOptions, CrpOptions, PcxOptions

    def digests(cfg):
        return {"authenticity": AuthenticityOptions.from_config(cfg, gan="cgan").digest,
                "crp": CrpOptions.from_config(cfg).digest, "pcx": PcxOptions.from_config(cfg).digest}
    before = digests(demo_cfg)
    for keys, value, changed in ((("authenticity", "perplexity"), 3, {"authenticity"}),
                                 (("pcx", "max_prototypes"), 2, {"pcx"}),
                                 (("crp", "composite"), "epsilon", {"crp", "pcx"}),
                                 (("crp", "concepts"), 1, {"crp"}),
                                 (("crp", "runtime_hours"), 9, set()), (("authenticity", "gpus"), 0, set()),
                                 (("crp", "enabled"), False, set())):
        cfg = copy.deepcopy(demo_cfg)
        cfg["explain"][keys[0]][keys[1]] = value
        after = digests(cfg)
        assert {name for name in before if before[name] != after[name]} == changed, keys
    crp = CrpOptions.from_config(demo_cfg)
    with pytest.raises(AttributeError, match="explain.crp.enabled|crp.enabled"):
        crp.crp["enabled"]
    assert set(AuthenticityOptions.from_config(demo_cfg, gan="cgan").to_dict()) == {
        "gan", "edge_cases", "perplexity", "xrai_images", "xrai_steps", "batch", "seed"}
    with pytest.raises(ConfigError, match="gan 'nope' is not defined under 'gans'"):
        AuthenticityOptions.from_config(demo_cfg, gan="nope")


def test_pcx_refuses_concept_relevances_of_another_classifier(explained, ingested_ham, tmp_path, capsys):
    """Issue 27, kind 1: CRP's cached relevances belong to the classifier they were computed with. A model folder
    retrained since (other weights, same architecture and shapes) is refused by the weights' identity, in one line."""
    import shutil
    manifest, root, *_ = explained
    copies = []
    for scenario in ("baseline", "SA-2k", "SA-2k-filter"):
        shutil.copytree(root / scenario, tmp_path / scenario)
        copies.append(str(tmp_path / scenario / "resnet10t"))
    saved = torch.load(tmp_path / "baseline" / "resnet10t" / "best.pt", weights_only=True)
    other = Recipe.from_section({**schema_defaults("classifiers.ham10000.recipe"), "input_resolution": 16,
                                 "pretrained": False, "seed": 9})
    retrained, _ = build_model("resnet10t", len(CLASSES), other)
    torch.save({**saved, "model": retrained.state_dict()}, tmp_path / "baseline" / "resnet10t" / "best.pt")
    capsys.readouterr()
    code = main(["explain", "pcx", "--config", str(root / "config.yaml"), "--models", *copies, "--sizes", "SA-2k", "--lmdb",
                 str(ingested_ham / "lmdb"), "--manifest", str(root / "manifest.csv"), "--device", "cpu",
                 "--crp", str(root / "crp"), "--out", str(tmp_path / "pcx")])
    error = capsys.readouterr().err
    assert code == 2 and "concepts-baseline.npz is concept relevances of another run (classifier:" in error
    assert error.count("\n") == 1 and "Traceback" not in error and not (tmp_path / "pcx" / "pcx.json").exists()
