"""The data stage's extension point and contract: archive readers are registered (schema types = readers = demo
writers), and each data verb's options hold what it reads — so a key re-runs exactly the jobs that read it."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml

from dermsynth.config import validate_config
from dermsynth.data.demo.archives import DEMO_WRITERS, write_folder
from dermsynth.data.options import DemoArchivesOptions, FederatedSplitOptions, IngestOptions, SplitOptions
from dermsynth.data.sources import READERS, make_reader, register_reader
from dermsynth.errors import ConfigError
from dermsynth.options import OptionError, StepOptions
from dermsynth.progress import Progress

from .conftest import REPO, demo_config

SCHEMAS = [REPO / "src/dermsynth/schemas/config.schema.yaml", REPO / "workflow/schemas/config.schema.yaml"]


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda p: p.parent.parent.name)
def test_the_schema_source_types_are_the_registered_readers(schema):
    types = yaml.safe_load(schema.read_text())["$defs"]["source"]["properties"]["type"]["enum"]
    assert sorted(types) == sorted(READERS) and len(types) == len(set(types))


def test_the_two_schema_copies_are_identical():
    assert SCHEMAS[0].read_text() == SCHEMAS[1].read_text()


def test_every_registered_reader_has_a_demo_writer():
    assert sorted(DEMO_WRITERS) == sorted(READERS)
    assert all(READERS[name].type_name == name for name in READERS)


def test_a_type_registered_twice_or_unknown_is_an_error():
    class Another:
        type_name = "ham10000"
    with pytest.raises(ValueError, match="registered twice"):
        register_reader(Another)
    assert register_reader(READERS["ham10000"]) is READERS["ham10000"]  # the same class again: no change
    with pytest.raises(ConfigError, match=r"no archive reader for 'ham20000' \(readers: derm7pt, "):
        make_reader("x", {"type": "ham20000", "path": "."})


def test_the_folder_demo_writer_is_read_by_the_folder_reader(tmp_path):
    truth: list[dict] = []
    write_folder(tmp_path, {"images": 9}, np.random.default_rng(0), truth, Progress(9, "demo folder"))
    catalog = make_reader("hospital", {"type": "folder", "path": str(tmp_path), "images": "images"}).read()
    assert len(catalog.records) == len(truth) == 9 and not catalog.rejections
    drawn = {t["image_id"]: t["diagnosis"] for t in truth}
    assert {r.member.name: r.diagnosis for r in catalog.records} == drawn
    assert all(r.patient_id and r.lesion_id for r in catalog.records)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> dict:
    return demo_config(tmp_path_factory.mktemp("unused"))


def _options(raw: dict) -> dict[str, StepOptions]:
    cfg = validate_config(raw, workflow=True)
    jobs = {"demo-archives": DemoArchivesOptions.from_config(cfg)}
    for dataset in cfg["datasets"]:
        jobs[f"ingest {dataset}"] = IngestOptions.from_config(cfg, dataset=dataset)
        jobs[f"split {dataset}"] = SplitOptions.from_config(cfg, dataset=dataset)
        if "federated" in cfg["datasets"][dataset]:
            jobs[f"federated-split {dataset}"] = FederatedSplitOptions.from_config(cfg, dataset=dataset)
    return jobs


def _changed(raw: dict, change) -> set[str]:
    """The data jobs whose options differ after `change(raw copy)`: those Snakemake re-runs."""
    before, after = _options(raw), copy.deepcopy(raw)
    change(after)
    after = _options(after)
    assert set(before) == set(after)
    return {job for job in before if before[job].digest != after[job].digest}


def test_a_key_changes_the_options_of_exactly_the_jobs_that_read_it(raw):
    def isic(key, value):
        return lambda r: r["datasets"]["isic"].__setitem__(key, value)
    assert _changed(raw, isic("resolution", 32)) == {"ingest isic"}
    assert _changed(raw, lambda r: r["datasets"]["isic"]["split"].__setitem__("seed", 99)) == {"split isic"}
    federated_seed = lambda r: r["datasets"]["isic"]["federated"].__setitem__("seed", 5)  # noqa: E731
    assert _changed(raw, federated_seed) == {"federated-split isic"}
    assert _changed(raw, lambda r: r["ingest"].__setitem__("shards", 8)) == {j for j in _options(raw) if "ingest" in j}
    assert _changed(raw, lambda r: r["sources"]["isic2020"].__setitem__("path", "elsewhere")) == {"ingest isic"}
    assert _changed(raw, lambda r: r["demo"].__setitem__("seed", 1)) == {"demo-archives"}
    # read by no data verb: the job's threads (ingest.workers), another stage's settings
    assert _changed(raw, lambda r: r["ingest"].__setitem__("workers", 7)) == set()
    assert _changed(raw, lambda r: r["evaluation"].__setitem__("batch", 3)) == set()


def test_options_round_trip_and_hold_no_other_key(raw, tmp_path):
    cfg = validate_config(raw, workflow=True)
    options = IngestOptions.from_config(cfg, dataset="isic")
    loaded = IngestOptions.load(options.write(tmp_path))
    assert loaded == options and loaded.digest == options.digest
    assert [s["source"] for s in loaded.sources] == [e["source"] for e in cfg["datasets"]["isic"]["sources"]]
    assert set(loaded.archives) == {e["source"] for e in cfg["datasets"]["isic"]["sources"]}
    with pytest.raises(AttributeError):
        loaded.workers  # noqa: B018  (the job's threads: a flag, not an option)
    with pytest.raises(OptionError, match=r"split.nonsense is not in this step's options"):
        SplitOptions.from_config(cfg, dataset="isic").split["nonsense"]
    with pytest.raises(TypeError, match="read-only"):
        loaded.archives["isic2020"]["path"] = "elsewhere"
    assert [f.name for f in dataclasses.fields(SplitOptions)] == ["dataset", "split"]


def test_unknown_dataset_or_missing_federated_section_is_a_config_error(raw):
    cfg = validate_config(raw, workflow=True)
    with pytest.raises(ConfigError, match=r"dataset 'nope' is not defined under 'datasets' \(defined: "):
        IngestOptions.from_config(cfg, dataset="nope")
    with pytest.raises(ConfigError, match="datasets.ham10000 has no 'federated' section"):
        FederatedSplitOptions.from_config(cfg, dataset="ham10000")


def test_the_rules_pass_options_not_configs():
    text = (REPO / "workflow/rules/data.smk").read_text()
    assert "--config" not in text and "rule_config" not in text and "$(" not in text
    assert text.count("--options {params.options}") == 4
    assert Path(REPO / "workflow/rules/common.smk").read_text().count("def ingest_config") == 0
