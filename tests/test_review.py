"""`dermsynth review` without a browser: the transformations file as accepted/rejected directions change it,
stale reviews, rendering edits with LPIPS, uploads, the server's address, and the page through AppTest.

The generator is random-init at the demo's size (64², the demo network) and its SeFa files are written by
the real `run_sefa`; nothing here is mocked."""

from __future__ import annotations

import io
import json
import shutil
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from dermsynth.config import schema_defaults, validate_config
from dermsynth.gan.networks import Generator
from dermsynth.latent.named import load_transformations
from dermsynth.review import render, store
from dermsynth.review.server import is_loopback, prepare

from .conftest import REPO, demo_config

INGEST = schema_defaults("ingest")  # the uploads' ingest settings: the schema's (a review without a config)

DEMO_NETWORK = {"z_dim": 64, "w_dim": 64, "mapping_layers": 4, "channel_base": 1024, "channel_max": 64}
GAN = "ham10000"  # the generator the repository's transformations file names


def save_generator(path: Path, seed: int) -> Path:
    """A random-init generator of the demo's size saved as a training checkpoint (`load_generator` reads it);
    the weights come from `seed` without touching the caller's global random state."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        G = Generator(img_resolution=64, **DEMO_NETWORK)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"options": json.dumps({"network": DEMO_NETWORK}), "G_ema": G.state_dict()}, path)
    return path


def _left(path: Path) -> list[Path]:
    """What a write left in `path`'s folder, but the lock file (`.<file>.lock`, which stays by design)."""
    return sorted(p for p in path.parent.iterdir() if p.name != f".{path.name}.lock")


def make_workdir(root: Path) -> Path:
    """A working directory as the workflow leaves it after `sefa`: config/ (the demo config, transformations
    file copied from the repository), results/gan/ham10000/network-final.pt, SeFa files for `all` and `coarse`."""
    from dermsynth.latent.options import SefaOptions
    from dermsynth.latent.run import run_sefa
    raw = demo_config(root)
    raw["latent"]["transform"]["file"] = "config/transformations.yaml"
    raw["demo"]["output"] = "resources/demo"
    for source in raw["sources"].values():
        source["path"] = source["path"].replace(str(root / "demo"), "resources/demo")
    (root / "config").mkdir(parents=True, exist_ok=True)
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(raw))
    shutil.copy(REPO / "config" / "transformations.yaml", root / "config" / "transformations.yaml")
    cfg = validate_config(raw)
    network = save_generator(root / "results" / "gan" / GAN / "network-final.pt", seed=0)
    for layer_range in ("all", "coarse"):
        out = root / "results" / "latent" / GAN / f"sefa-{layer_range}.npz"
        run_sefa(SefaOptions.from_config(cfg, layers=layer_range), network, out, out.with_suffix(".png"), device="cpu")
    return root


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return make_workdir(tmp_path_factory.mktemp("review"))


@pytest.fixture
def file(tmp_path) -> store.TransformationsFile:
    path = tmp_path / "transformations.yaml"
    shutil.copy(REPO / "config" / "transformations.yaml", path)
    return store.TransformationsFile(path, [GAN])


def _accept(file, name="NEW", direction=3, **overrides):
    values = dict(name=name, description="lesion border sharpness", gan=GAN, layer_range="coarse",
                  direction=direction, magnitude=(-2.0, 2.5), checkpoint_sha256="a" * 64, reviewed_by="tester",
                  direction_count=64)
    return file.accept(**{**values, **overrides})


# ---- the transformations file ------------------------------------------------------------------------
def test_accept_appends_a_valid_entry_and_keeps_comments_and_other_entries(file):
    original = file.path.read_text()
    before = load_transformations(file.path, [GAN])
    saved = _accept(file)
    text = file.path.read_text()
    assert text.startswith(original)  # comments, layout and the five entries byte for byte; the new one appended
    after = load_transformations(file.path, [GAN])  # the workflow's own check
    assert after[:5] == before
    new = after[5]
    assert {k: new[k] for k in ("name", "description", "gan", "layer_range", "direction", "magnitude")} == {
        "name": "NEW", "description": "lesion border sharpness", "gan": GAN, "layer_range": "coarse",
        "direction": 3, "magnitude": [-2.0, 2.5]}
    review = new["review"]
    assert review["reviewed_by"] == "tester" and review["checkpoint_sha256"] == "a" * 64
    from datetime import datetime
    assert datetime.fromisoformat(review["reviewed_on"]).tzinfo is not None  # ISO 8601, UTC, a string
    assert saved["name"] == "NEW" and saved["magnitude"] == [-2.0, 2.5]
    assert "    magnitude: [-2.0, 2.5]\n" in text  # flow style, like the hand-written entries
    assert _left(file.path) == [file.path]  # no temporary file left behind (the lock file stays, by design)


def test_round_trip_of_the_repository_file_is_byte_identical(file):
    document = store._yaml().load(file.path.read_text())
    out = io.StringIO()
    store._yaml().dump(document, out)
    assert out.getvalue() == file.path.read_text()


def test_replacing_an_entry_updates_it_in_place(file):
    with pytest.raises(store.ReviewError, match="a transformation named 'SV' exists already"):
        _accept(file, name="SV")
    _accept(file, name="SV", direction=1, magnitude=(-1.0, 1.0), replace=True)
    entries = load_transformations(file.path, [GAN])
    assert [e["name"] for e in entries] == ["SPV", "SV", "BCV", "GV", "PS"]
    assert entries[1]["magnitude"] == [-1.0, 1.0] and entries[1]["description"] == "lesion border sharpness"
    assert "# The HAM10000 study's five transformations" in file.path.read_text()


def test_reject_records_the_reason_and_a_later_accept_removes_it(file):
    _ = file.reject(gan=GAN, layer_range="fine", direction=5, reason="only changes the noise texture",
                    checkpoint_sha256="b" * 64, reviewed_by="tester", direction_count=64)
    raw = yaml.safe_load(file.path.read_text())
    assert raw["rejected"] == [{"gan": GAN, "layer_range": "fine", "direction": 5,
                                "reason": "only changes the noise texture", "reviewed_by": "tester",
                                "reviewed_on": raw["rejected"][0]["reviewed_on"], "checkpoint_sha256": "b" * 64}]
    assert len(load_transformations(file.path, [GAN])) == 5  # still a valid workflow file
    marks = file.usage(GAN, "fine")
    assert {d: (m["names"], m["rejected"]) for d, m in marks.items()} == {
        0: (["BCV"], []), 5: ([], ["only changes the noise texture"])}
    with pytest.raises(store.ReviewError, match="give the reason"):
        file.reject(gan=GAN, layer_range="fine", direction=6, reason="  ", checkpoint_sha256="b" * 64,
                    reviewed_by="tester")
    with pytest.raises(store.ReviewError, match="is used by SPV"):
        file.reject(gan=GAN, layer_range="coarse", direction=0, reason="no", checkpoint_sha256="b" * 64,
                    reviewed_by="tester")
    _accept(file, name="FN", layer_range="fine", direction=5)
    assert yaml.safe_load(file.path.read_text())["rejected"] == []


@pytest.mark.parametrize("name, message", [("bad name!", "may hold letters, digits, '-' and '_' only"),
                                           ("", "may hold letters, digits"),
                                           ("SPV", "exists already")])
def test_an_invalid_name_is_refused_and_the_file_is_unchanged(file, name, message):
    original = file.path.read_bytes()
    with pytest.raises(store.ReviewError, match=message):
        _accept(file, name=name)
    assert file.path.read_bytes() == original
    assert _left(file.path) == [file.path]


def test_other_refusals_leave_the_file_unchanged(file):
    original = file.path.read_bytes()
    with pytest.raises(store.ReviewError, match="direction 64 does not exist"):
        _accept(file, direction=64)
    with pytest.raises(store.ReviewError, match="magnitude must be"):
        _accept(file, magnitude=(2.0, -2.0))
    with pytest.raises(store.ReviewError, match="description is empty"):
        _accept(file, description=" ")
    restricted = store.TransformationsFile(file.path, ["cgan"])  # ham10000 not inverted by this config
    with pytest.raises(store.InvalidTransformationsFile, match="is not one of latent.inversion.gans"):
        _accept(restricted)
    assert file.path.read_bytes() == original


def test_an_invalid_file_shows_the_validators_message_and_is_never_overwritten(file):
    broken = file.path.read_text().replace("name: SV\n", "name: SPV\n")
    file.path.write_text(broken)
    assert "name 'SPV' is used twice" in file.problem()
    with pytest.raises(store.InvalidTransformationsFile, match="is used twice"):
        _accept(file)
    with pytest.raises(store.InvalidTransformationsFile):
        file.reject(gan=GAN, layer_range="fine", direction=5, reason="x", checkpoint_sha256="b" * 64,
                    reviewed_by="t")
    assert file.path.read_text() == broken
    file.path.write_text("transformations: [unclosed\n")
    assert "not valid YAML" in file.problem() or "expected" in file.problem()


def test_a_new_file_needs_an_accepted_direction_first(tmp_path):
    new = store.TransformationsFile(tmp_path / "new.yaml")
    with pytest.raises(store.ReviewError, match="accept a direction first"):
        new.reject(gan=GAN, layer_range="fine", direction=5, reason="x", checkpoint_sha256="b" * 64,
                   reviewed_by="t")
    assert not new.path.exists()
    _accept(new)
    assert [e["name"] for e in load_transformations(new.path)] == ["NEW"]


def test_reviews_go_stale_when_the_generator_changes(tmp_path, file):
    network = save_generator(tmp_path / "gan" / "network-final.pt", seed=0)
    first = store.checkpoint_hash(network)
    assert len(first) == 64 and first == store.checkpoint_hash(network)
    import hashlib
    assert first == hashlib.sha256(network.read_bytes()).hexdigest()
    _accept(file, checkpoint_sha256=first)
    file.reject(gan=GAN, layer_range="fine", direction=5, reason="noise", checkpoint_sha256=first,
                reviewed_by="tester")
    found = file.stale({GAN: first})
    # the five shipped entries carry no review: never reviewed on this checkpoint; NEW and the rejection are current
    assert [(s.kind, s.label, s.review.state) for s in found] == [
        ("transformation", name, "not reviewed") for name in ("SPV", "SV", "BCV", "GV", "PS")]
    assert found[0].review.describe() == "shipped, not reviewed here"
    time.sleep(0.01)
    save_generator(network, seed=1)  # retrained: other weights
    second = store.checkpoint_hash(network)
    assert second != first
    stale = [s for s in file.stale({GAN: second}) if s.review.state == "stale"]
    assert [(s.kind, s.label, s.reviewed) for s in stale] == [
        ("transformation", "NEW", first), ("rejected", f"{GAN} fine #5", first)]
    assert stale[0].review.describe().startswith(f"stale — reviewed on {stale[0].review.reviewed_on[:10]} ({first[:12]}")
    assert file.stale({"other": second}) == []
    assert [s.review.state for s in file.stale({GAN: None})][-2:] == ["stale", "stale"]  # the checkpoint is gone


def test_a_review_records_the_generator_digest_and_is_judged_by_it(file):
    """The generator digest (what SeFa files and inversions record) is compared when both sides have it: a
    checkpoint re-saved with the same weights stays reviewed; other weights are stale."""
    from dermsynth.latent.named import review_state
    _accept(file, checkpoint_sha256="a" * 64, generator="g" * 16)
    entry = load_transformations(file.path, [GAN])[-1]
    assert entry["review"]["generator"] == "g" * 16
    assert review_state(entry["review"], "g" * 16, "b" * 64).state == "reviewed"  # same weights, other file
    assert review_state(entry["review"], "h" * 16, "a" * 64).state == "stale"
    assert review_state(entry["review"], None, "a" * 64).state == "reviewed"  # only the file's hash to compare
    assert review_state({"checkpoint_sha256": "a" * 64}, "g" * 16, None).state == "unknown"
    assert review_state(None, "g" * 16, "a" * 64).state == "not reviewed"
    marks = file.usage(GAN, "coarse", "h" * 16, "a" * 64)
    assert [s.state for s in marks[3]["reviews"]] == ["stale"] and marks[0]["names"] == ["SPV"]
    assert marks[0]["reviews"][0].describe() == "shipped, not reviewed here"


def test_latent_transform_warns_in_one_line_for_an_entry_not_reviewed_on_its_generator(tmp_path):
    """What `dermsynth latent transform` prints for a stale or never-reviewed entry (it runs it all the same: the
    demo's shipped entries are never reviewed on the demo generator)."""
    from dermsynth.latent.named import review_state, review_warning
    entry = {"name": "SPV", "gan": GAN, "direction": 0}
    shipped = review_warning(entry, review_state(None, "g" * 16, None), "net.pt")
    assert shipped.count("\n") == 0 and "SPV was never reviewed on net.pt" in shipped
    assert "dermsynth review --gan ham10000" in shipped
    old = {"reviewed_on": "2026-01-02T03:04:05+00:00", "generator": "f" * 16, "checkpoint_sha256": "a" * 64}
    stale = review_warning(entry, review_state(old, "g" * 16, None), "net.pt")
    assert "reviewed on another checkpoint (ffffffffffff…, 2026-01-02), not on net.pt" in stale
    assert review_warning(entry, review_state(old, "f" * 16, None), "net.pt") is None


def test_latent_transform_judges_the_entry_it_runs_against_its_network(tmp_path, file, capsys):
    """`latent transform --transformations` (latent.transform.reviewed_on, called with the generator it loaded):
    shipped entry → one WARNING line and 'not reviewed'; reviewed on this generator → silent; on another → 'stale'."""
    from dermsynth.gan.run import load_generator
    from dermsynth.latent.identity import generator_digest
    from dermsynth.latent.transform import reviewed_on
    network = save_generator(tmp_path / "gan" / "network-final.pt", seed=0)
    digest = generator_digest(load_generator(network))
    spec = {"name": "SPV", "gan": GAN, "direction": 0}
    assert reviewed_on(spec, file.path, digest, network) == "not reviewed"
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("transform SPV: WARNING: transformation SPV was never reviewed on ")
    _accept(file, name="SPV", layer_range="coarse", direction=0, replace=True, generator=digest,
            checkpoint_sha256=store.checkpoint_hash(network))
    assert reviewed_on(spec, file.path, digest, network) == "reviewed" and capsys.readouterr().err == ""
    _accept(file, name="NEW", checkpoint_sha256=store.checkpoint_hash(network))  # an older page: the file's hash
    assert reviewed_on({**spec, "name": "NEW"}, file.path, digest, network) == "reviewed"
    save_generator(network, seed=1)  # retrained
    other = generator_digest(load_generator(network))
    assert reviewed_on(spec, file.path, other, network) == "stale"
    assert reviewed_on({**spec, "name": "NEW"}, file.path, other, network) == "stale"
    assert "was reviewed on another checkpoint" in capsys.readouterr().err
    assert reviewed_on(spec, None, other, network) == "unknown"


def test_reviewer_name_defaults_to_the_os_user(monkeypatch):
    assert store.reviewer_name(" alice ") == "alice"
    monkeypatch.setenv("USER", "bob")
    monkeypatch.setenv("LOGNAME", "bob")
    assert store.reviewer_name(None) == "bob"


# ---- rendering -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(workdir):
    with warnings.catch_warnings():  # LPIPS' AlexNet trunk without cached ImageNet weights
        warnings.simplefilter("ignore", UserWarning)
        return render.ReviewEngine(workdir, GAN, validate_config(yaml.safe_load(
            (workdir / "config" / "config.yaml").read_text())))


def test_generators_and_directions_are_listed(workdir):
    generators = render.list_generators(workdir)
    assert [(g.name, g.layer_ranges) for g in generators] == [(GAN, ["all", "coarse"])]
    directions = render.load_directions(workdir, GAN, "coarse")
    assert directions.directions.shape == (64, 64) and directions.directions.dtype == np.float32
    assert np.all(np.diff(directions.eigenvalues) <= 1e-9)
    with pytest.raises(FileNotFoundError, match="sefa-fine.npz"):
        render.load_directions(workdir, GAN, "fine")


def test_an_edit_moves_the_image_and_lpips_follows(engine, workdir):
    directions = render.load_directions(workdir, GAN, "all")
    source = engine.sample_source(seed=3)
    assert source.image.shape == (3, 64, 64) and source.image.dtype == torch.uint8
    still = engine.render(source, directions, 0, 0.0)
    assert torch.equal(still.image, source.image) and still.lpips_to_source == pytest.approx(0, abs=1e-6)
    moved = engine.render(source, directions, 0, 3.0)
    assert (moved.image.int() - source.image.int()).abs().float().mean() > 1.0
    assert moved.lpips_to_source > 0 and moved.wayward == (moved.lpips_to_source > 0.2)
    assert engine.threshold == 0.2  # latent.transform.lpips_threshold of the config
    picture, magnitudes, distances = engine.strip([source, engine.sample_source(4)], directions, 0, -3.0, 3.0, 5)
    assert picture.shape == (2 * 64, 5 * 64, 3) and picture.dtype == np.uint8
    np.testing.assert_allclose(magnitudes, [-3, -1.5, 0, 1.5, 3])
    assert distances.shape == (2, 5) and np.all(distances[:, 2] < 1e-3)
    same = np.abs(picture[:64, 4 * 64:].astype(int) - render.to_picture(moved.image).astype(int))
    assert same.max() <= 1  # the same edit (batched: rounding may move a pixel by one level)


def test_slider_render_is_under_a_second_at_64(engine, workdir):
    """The issue's responsiveness bar: one slider move (synthesis + two LPIPS) under 1 s on CPU at 64²."""
    torch.set_num_threads(1)
    directions = render.load_directions(workdir, GAN, "coarse")
    source = engine.sample_source(seed=0)
    engine.render(source, directions, 2, 0.5)  # warm-up
    seconds = [engine.render(source, directions, 2, m).seconds for m in np.linspace(-3, 3, 15)]
    median = statistics.median(seconds)
    print(f"slider re-render at 64² on CPU (1 thread): median {median * 1000:.1f} ms, max {max(seconds) * 1000:.1f} ms")
    assert median < 1.0


# ---- uploads -------------------------------------------------------------------------------------------
def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_bad_uploads_get_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(render.UploadRejected, match="not a readable image|cannot be decoded"):
        render.decode_upload(b"this is a text file", "lesion.png", 64, INGEST)
    with pytest.raises(render.UploadRejected, match="the file is empty"):
        render.decode_upload(b"", "lesion.png", 64, INGEST)
    bomb = _png(Image.new("1", (9000, 9000)))  # 81 MP of zeros: a few kB compressed
    assert len(bomb) < 100_000
    with pytest.raises(render.UploadRejected, match="9000×9000 pixels is more than the 40 megapixels"):
        render.decode_upload(bomb, "bomb.png", 64, INGEST)
    with pytest.raises(render.UploadRejected, match="grayscale image"):
        render.decode_upload(_png(Image.new("L", (80, 60), 128)), "gray.png", 64, INGEST)
    noise = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    truncated = _png(Image.fromarray(noise))[:2000]
    with pytest.raises(render.UploadRejected, match="damaged or truncated"):
        render.decode_upload(truncated, "cut.png", 64, INGEST)
    assert list(tmp_path.iterdir()) == []


def test_odd_modes_and_hostile_names_are_decoded_without_writing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
    cmyk = io.BytesIO()
    rgb.convert("CMYK").save(cmyk, format="JPEG")
    image = render.decode_upload(cmyk.getvalue(), "../../../etc/cmyk.jpg", 64, INGEST)
    assert image.shape == (3, 64, 64) and image.dtype == torch.uint8
    rgba = render.decode_upload(_png(rgb.convert("RGBA")), "/tmp/../x.png", 64, INGEST)
    palette = render.decode_upload(_png(rgb.convert("P")), "p.png", 64, INGEST)
    assert rgba.shape == palette.shape == (3, 64, 64)
    assert list(tmp_path.iterdir()) == []  # the name is never used as a path


def test_without_encoders_an_upload_is_projected_on_request_with_progress(engine):
    rng = np.random.default_rng(1)
    data = _png(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    with pytest.raises(render.NoEncoder, match=r"no e4e encoder for ham10000 \(results/latent/ham10000/e4e.pt\): "
                       "`snakemake results/latent/ham10000/e4e.pt` trains it"):
        engine.upload_source(data, "lesion.png")  # no projection behind the reviewer's back
    engine.cfg = {**engine.cfg, "latent": {**engine.cfg["latent"], "projection": {"steps": 1000, "w_avg_samples": 50}}}
    steps = []
    source = engine.project_source(engine.upload_image(data, "lesion.png"), "upload lesion.png", 3,
                                   on_step=lambda done, total: steps.append((done, total)))
    assert steps == [(1, 3), (2, 3), (3, 3)]  # the projector's loop reports each step; the page's steps win
    assert source.method == "projection, 3 steps" and source.ws.shape == (1, engine.G.num_ws, 64)
    assert source.inversion.shape == (3, 64, 64)


def test_a_projection_job_stops_when_cancelled_or_its_page_is_gone(engine, monkeypatch):
    """review.jobs with the real projector: one at a time (a second start is refused, naming the first), a cancel
    ends the thread within a step, and so does a session that is no longer active (the tab was closed)."""
    from dermsynth.review import jobs
    monkeypatch.setattr(jobs, "GRACE", 0.0)
    target = engine.sample_source(seed=5).image
    work = lambda on_step: engine.project_source(target, "sample 5", 100_000, on_step)  # noqa: E731
    slot = jobs.Slot()
    first = slot.start(jobs.Job(("a",), "sample 5", 100_000, "session-1"), work)
    deadline = time.time() + 120
    while first.done < 2 and time.time() < deadline:
        time.sleep(0.05)
    assert first.running and first.done >= 2
    with pytest.raises(jobs.Busy, match=r"another projection is running \(sample 5: step \d+/100000\)"):
        slot.start(jobs.Job(("b",), "other", 10, "session-2"), work)
    first.cancel("the choice changed")
    assert first.wait(60) and not first.thread.is_alive()
    assert first.state == jobs.CANCELLED and first.done < 100_000
    stopped_at = first.done
    time.sleep(0.5)
    assert first.done == stopped_at  # the counter stopped

    open_page = {"alive": True}
    second = slot.start(jobs.Job(("b",), "sample 5", 100_000, "session-2", lambda: open_page["alive"]), work)
    while second.done < 2 and time.time() < deadline:
        time.sleep(0.05)
    assert second.running
    open_page["alive"] = False  # the browser tab is closed: the session is no longer active
    assert second.wait(60) and second.state == jobs.CANCELLED and second.reason == "the page was closed"

    def broken(on_step):
        raise RuntimeError("out of memory\nsecond line")
    third = slot.start(jobs.Job(("c",), "x", 1, "s"), broken)
    assert third.wait(10) and third.state == jobs.FAILED and third.error == "RuntimeError: out of memory"


# ---- the server ----------------------------------------------------------------------------------------
def test_the_page_binds_the_loopback_address_unless_told_otherwise(workdir):
    command, env, warnings = prepare(GAN, 8765, "127.0.0.1", None, "config/config.yaml", "ann", root=workdir)
    assert command[command.index("--server.address") + 1] == "127.0.0.1" and warnings == []
    assert command[command.index("--server.port") + 1] == "8765"
    assert env["DERMSYNTH_REVIEW_REVIEWER"] == "ann" and env["DERMSYNTH_REVIEW_GAN"] == GAN
    assert env["DERMSYNTH_REVIEW_TRANSFORMATIONS"] == str((workdir / "config/transformations.yaml").resolve())
    assert env["DERMSYNTH_REVIEW_CONFIG"] == str((workdir / "config/config.yaml").resolve())
    _, _, warnings = prepare(GAN, 8765, "0.0.0.0", "t.yaml", "missing.yaml", None, root=workdir)
    assert len(warnings) == 1 and "reachable from other machines" in warnings[0]
    from dermsynth.cli import build_parser
    args = build_parser().parse_args(["review", "--gan", GAN])
    assert args.host == "127.0.0.1" and args.port == 8501 and args.transformations is None
    assert is_loopback("::1") and is_loopback("localhost") and not is_loopback("192.168.1.4")
    from dermsynth.errors import ConfigError
    with pytest.raises(ConfigError, match="generator 'cgan' has no results/gan/cgan/network-final.pt"):
        prepare("cgan", 8765, "127.0.0.1", None, "missing.yaml", None, root=workdir)


# ---- the page, through Streamlit's AppTest ------------------------------------------------------------
@pytest.fixture
def app(workdir, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from dermsynth.review.server import APP
    transformations = tmp_path / "transformations.yaml"
    shutil.copy(REPO / "config" / "transformations.yaml", transformations)
    monkeypatch.setenv("DERMSYNTH_REVIEW_ROOT", str(workdir))
    monkeypatch.setenv("DERMSYNTH_REVIEW_GAN", GAN)
    monkeypatch.setenv("DERMSYNTH_REVIEW_TRANSFORMATIONS", str(transformations))
    monkeypatch.setenv("DERMSYNTH_REVIEW_CONFIG", str(workdir / "config" / "config.yaml"))
    monkeypatch.setenv("DERMSYNTH_REVIEW_REVIEWER", "apptest")
    return AppTest.from_file(str(APP), default_timeout=180), transformations


def test_the_page_accepts_a_direction_with_a_name(app):
    at, transformations = app
    at.run()
    assert not at.exception and not at.error
    assert at.selectbox(key="gan").value == GAN
    at.selectbox(key="layer_range").set_value("coarse").run()
    assert at.selectbox(key="direction").options[0].startswith("#0  λ = ")
    table = at.sidebar.dataframe[0].value
    assert table["named"].tolist()[:3] == ["SPV", "SV", ""] and len(table) == 64
    at.selectbox(key="direction").set_value(4).run()
    first = at.metric[0].value
    at.slider(key="magnitude").set_value(2.5).run()
    assert at.metric[0].value != first and float(at.metric[0].value) > 0
    at.text_input(key="name").input("BORDER").run()
    at.text_input(key="description").input("border sharpness").run()
    at.button(key="accept").click().run()
    assert not at.error, [e.value for e in at.error]
    assert "Saved transformation BORDER" in at.success[0].value
    entry = load_transformations(transformations, [GAN])[-1]
    assert (entry["name"], entry["layer_range"], entry["direction"], entry["magnitude"]) == \
        ("BORDER", "coarse", 4, [-3.0, 3.0])
    assert entry["review"]["reviewed_by"] == "apptest"
    assert at.sidebar.dataframe[0].value["named"].tolist()[4] == "BORDER"  # the table shows it at once
    assert at.selectbox(key="direction").value == 4


def test_the_page_refuses_a_bad_name_and_records_a_rejection(app):
    at, transformations = app
    at.run()
    original = transformations.read_text()
    at.text_input(key="name").input("no spaces").run()
    at.text_input(key="description").input("x").run()
    at.button(key="accept").click().run()
    assert "may hold letters, digits" in at.error[0].value and transformations.read_text() == original
    at.selectbox(key="direction").set_value(7).run()
    at.text_input(key="reason").input("duplicates direction 0").run()
    at.button(key="reject").click().run()
    assert "Recorded ham10000 all #7 as rejected" in at.success[0].value
    assert yaml.safe_load(transformations.read_text())["rejected"][0]["reason"] == "duplicates direction 0"
    assert at.sidebar.dataframe[0].value["rejected"].tolist()[7] == "duplicates direction 0"
    assert any("This direction was rejected: duplicates direction 0" in i.value for i in at.info)


def test_the_page_shows_an_invalid_file_and_saves_nothing(app):
    at, transformations = app
    broken = transformations.read_text().replace("layer_range: fine", "layer_range: finest")
    transformations.write_text(broken)
    at.run()
    assert not at.exception
    assert "layer_range 'finest' is not one of all, coarse, middle, fine" in at.error[0].value
    with pytest.raises(KeyError):
        at.button(key="accept")  # saving is disabled
    assert transformations.read_text() == broken


def test_the_page_reports_a_bad_upload(app):
    at, _ = app
    at.run()
    at.radio(key="source_kind").set_value("upload").run()
    uploader = at.file_uploader(key="upload")
    uploader.upload("lesion.png", b"%PDF-1.4 not a lesion", "image/png").run()
    assert not at.exception
    assert "This upload cannot be used: lesion.png: the file is PDF" in at.error[0].value


# ---- dataset images: inverted on the fly by e4e + HyperStyle, or read from a stored inversion ----------
def test_dataset_images_use_the_stored_inversion_or_are_inverted_on_the_fly(workdir, ingested_ham, tmp_path):
    """Random-init e4e and HyperStyle (saved as the training verbs save them, read by `load_e4e` and
    `load_hyperstyle`) invert a demo HAM10000 image on the fly; after the inversion is stored (the chunk
    merge `invert` runs), the same key comes from the stored latents with the same reconstruction."""
    from dataclasses import asdict

    import pandas as pd

    from dermsynth.data.splits import split_dataset
    from dermsynth.gan.run import load_generator
    from dermsynth.config import schema_defaults
    from dermsynth.latent.inversion import (E4eOptions, HyperStyleOptions, build_e4e, build_hypernetwork, invert)
    from dermsynth.latent.run_inversion import _merge_chunks
    root = tmp_path / "work"
    shutil.copytree(workdir / "results" / "gan", root / "results" / "gan")
    shutil.copytree(workdir / "results" / "latent", root / "results" / "latent")
    data = root / "results" / "data" / "ham10000"
    data.mkdir(parents=True)
    (data / "lmdb").symlink_to(ingested_ham / "lmdb")
    cfg = validate_config(yaml.safe_load((workdir / "config" / "config.yaml").read_text()))
    ingested = pd.read_csv(ingested_ham / "ingested.csv", dtype=str, keep_default_na=False)
    split_dataset(ingested, cfg["datasets"]["ham10000"]["split"]).to_csv(data / "manifest.csv", index=False)
    G = load_generator(root / "results" / "gan" / GAN / "network-final.pt")
    small = {"backbone": "resnet18", "input_resolution": 32, "pretrained": False}
    e4e = E4eOptions.from_section({**schema_defaults("latent.e4e"), **small})
    hyper_options = HyperStyleOptions.from_section({**schema_defaults("latent.hyperstyle"), **small, "iterations": 2})
    encoder, hyper = build_e4e(G, e4e), build_hypernetwork(G, hyper_options)
    from dermsynth.fingerprint import tensors_digest
    from dermsynth.latent.identity import generator_digest
    made_for = {"generator": generator_digest(G)}  # what train-e4e / train-hyperstyle record
    torch.save({"format": "e4e", "encoder": encoder.state_dict(), "options": asdict(e4e), "fingerprint": made_for},
               root / "results/latent" / GAN / "e4e.pt")
    torch.save({"format": "hyperstyle", "hypernetwork": hyper.state_dict(), "options": asdict(hyper_options),
                "fingerprint": {**made_for, "e4e": tensors_digest(encoder.state_dict())}},
               root / "results/latent" / GAN / "hyperstyle.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        engine = render.ReviewEngine(root, GAN, cfg)
    assert engine.dataset_choices() == ["ham10000"]  # the GAN's own (ham10000_gan) is not ingested here
    images = engine.dataset_images("ham10000")
    keys = images["key"].tolist()[:2]
    assert not images["stored"].any()
    live = engine.dataset_source("ham10000", keys[0])
    assert live.method == "e4e + HyperStyle" and set(live.deltas) == set(hyper.layer_names)
    assert live.image.shape == live.inversion.shape == (3, 64, 64)
    edit = engine.render(live, render.load_directions(root, GAN, "coarse"), 1, 0.0)
    assert (edit.image.int() - live.inversion.int()).abs().max() <= 1  # magnitude 0: the inversion itself

    from dermsynth.data.dataset import read_images
    result = invert(G, encoder, read_images(data / "lmdb", keys), hyper, hyper_options.iterations)
    chunk = tmp_path / "chunk-0.pt"
    torch.save({"keys": keys, "ws": result["ws"],
                "factors": {k: [a.half(), b.half()] for k, (a, b) in result["factors"].items()}}, chunk)
    frame = images[images["key"].isin(keys)][["key", "label", "split"]].reset_index(drop=True)
    _merge_chunks([chunk], root / "results/latent" / GAN / "inversion", frame, hyper.layer_names)
    engine._stored = None
    assert engine.dataset_images("ham10000")["stored"].sum() == 2
    stored = engine.dataset_source("ham10000", keys[0])
    assert stored.method == "stored inversion" and torch.equal(stored.image, live.image)
    assert (stored.inversion.int() - live.inversion.int()).abs().float().mean() < 1.0  # float16 offsets


def test_the_page_flags_stale_reviews_and_draws_the_strip(app):
    at, transformations = app
    old = store.TransformationsFile(transformations, [GAN])
    _accept(old, name="OLD", checkpoint_sha256="0" * 64)  # reviewed on another checkpoint
    at.run()
    assert not at.exception
    assert any("Stale reviews" in w.value and "transformation OLD" in w.value for w in at.warning)
    # the shipped entries were never reviewed on this (freshly trained) generator: not shown as plainly "named"
    assert any("Shipped, not reviewed here: SPV, SV, BCV, GV, PS" in w.value for w in at.warning)
    at.selectbox(key="layer_range").set_value("coarse").run()
    table = at.sidebar.dataframe[0].value
    assert table["review"].tolist()[:3] == ["shipped, not reviewed here", "shipped, not reviewed here", ""]
    assert table["review"].tolist()[3].startswith("stale — reviewed on ")
    at.toggle(key="show_strip").set_value(True).run()
    captions = [caption for image in at.image for caption in image.captions]
    assert captions[:2] == ["source: sample seed 0 (ψ 0.7)", "inversion (sample)"]
    assert captions[3].startswith("rows: this source, samples of seeds 1, 2, 3 (ψ 0.7) · columns: -3.0, -2.0, -1.0, "
                                  "+0.0")
    assert at.main.dataframe[-1].value.shape == (4, 7)  # LPIPS per source row and magnitude column


def test_the_strips_rows_are_different_images(engine, workdir):
    """The strip once showed the source twice (the page's default source is sample seed 0, and the strip added
    seeds 0–2): its rows are now four different images, compared at magnitude 0 (the unedited column)."""
    directions = render.load_directions(workdir, GAN, "all")
    for source in (engine.sample_source(0), engine.sample_source(2), engine.sample_source(7, 0.5)):
        seeds = render.strip_seeds(source)
        assert len(seeds) == 3 and source.seed not in seeds
        picture, magnitudes, _ = engine.strip([source] + [engine.sample_source(s) for s in seeds], directions, 0,
                                              -3.0, 3.0, 7)
        centre = list(magnitudes).index(0.0)
        rows = [picture[r * 64:(r + 1) * 64, centre * 64:(centre + 1) * 64].astype(int) for r in range(4)]
        assert np.abs(rows[0] - render.to_picture(source.image)).max() <= 1  # batched: rounding may move a level
        for i in range(4):
            for j in range(i + 1, 4):
                assert np.abs(rows[i] - rows[j]).mean() > 5, (i, j)


def test_the_page_projects_on_request_and_a_changed_choice_stops_it(app, workdir, ingested_ham, tmp_path):
    """No encoder: a dataset image is not projected until asked; the page says so and offers the button; once
    started, changing the image stops the worker thread (the steps stop) and the page offers the button again."""
    import pandas as pd

    from dermsynth.data.splits import split_dataset
    from dermsynth.review import jobs
    at, _ = app
    data = workdir / "results" / "data" / "ham10000"
    if not data.exists():
        data.mkdir(parents=True)
        (data / "lmdb").symlink_to(ingested_ham / "lmdb")
        cfg = validate_config(yaml.safe_load((workdir / "config" / "config.yaml").read_text()))
        ingested = pd.read_csv(ingested_ham / "ingested.csv", dtype=str, keep_default_na=False)
        split_dataset(ingested, cfg["datasets"]["ham10000"]["split"]).to_csv(data / "manifest.csv", index=False)
    at.run()
    at.radio(key="source_kind").set_value("dataset image").run()
    assert not at.exception
    assert any("no e4e encoder for ham10000" in i.value for i in at.info)
    assert not at.image  # nothing projected behind the reviewer's back
    at.number_input(key="projection_steps").set_value(100_000).run()
    at.button(key="project").click().run()
    job = jobs.SLOT.current
    assert job is not None and job.total == 100_000
    deadline = time.time() + 120
    while job.done < 2 and time.time() < deadline:
        time.sleep(0.05)
    assert job.running and job.done >= 2
    keys = at.selectbox(key="image_key").options
    at.selectbox(key="image_key").set_value(keys[1]).run()  # another image: the projection of the first stops
    assert job.wait(30) and job.state == jobs.CANCELLED and job.reason == "the choice changed"
    stopped_at = job.done
    time.sleep(0.5)
    assert job.done == stopped_at and not job.thread.is_alive()
    assert at.button(key="project").disabled is False and not at.exception
