"""The review page (Streamlit). Started by `dermsynth review`, which passes its options in the environment:

    DERMSYNTH_REVIEW_ROOT             working directory holding results/ (default: the current one)
    DERMSYNTH_REVIEW_GAN              generator shown first
    DERMSYNTH_REVIEW_TRANSFORMATIONS  the transformations file to write
    DERMSYNTH_REVIEW_CONFIG           workflow config (datasets, LPIPS threshold, latent.inversion.gans)
    DERMSYNTH_REVIEW_REVIEWER         recorded as reviewed_by (default: the OS user)

The generator, LPIPS network, encoders and SeFa files are loaded once (st.cache_resource, keyed by the files'
modification times); the source latent of each choice is kept in the browser session (st.session_state), so a
slider move only re-synthesises one image and measures its LPIPS.

A dataset image or upload is inverted at once by the generator's trained e4e encoder (with HyperStyle's
refinement when results/latent/<gan>/hyperstyle.pt exists). Without an encoder the page says so and offers the
optimisation projection on request (a button): it runs in a worker thread the session owns (review.jobs), one at
a time per server, with its steps shown; it stops when the choice (generator, image) changes, on Cancel, or when
the browser tab is closed (the session is no longer active).

Without a config file the page still works: every dataset under results/data can be browsed, and the LPIPS
threshold, ingest and projection settings are the schema's defaults (the projection's steps can be set on the page).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from streamlit import runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx

from dermsynth.config import load_config
from dermsynth.latent.named import NOT_REVIEWED, STALE
from dermsynth.review import jobs, render, store


def _settings() -> dict:
    root = Path(os.environ.get("DERMSYNTH_REVIEW_ROOT") or ".").resolve()
    config = os.environ.get("DERMSYNTH_REVIEW_CONFIG") or str(root / "config" / "config.yaml")
    return {"root": root, "gan": os.environ.get("DERMSYNTH_REVIEW_GAN") or "",
            "transformations": os.environ.get("DERMSYNTH_REVIEW_TRANSFORMATIONS")
            or str(root / "config" / "transformations.yaml"),
            "config": config, "reviewer": store.reviewer_name(os.environ.get("DERMSYNTH_REVIEW_REVIEWER"))}


def _mtime(path) -> int:
    path = Path(path)
    return path.stat().st_mtime_ns if path.exists() else 0


@st.cache_resource(show_spinner=False)
def _config(path: str, mtime: int) -> dict:
    return load_config(path) if mtime else {}


@st.cache_resource(show_spinner="loading the generator, LPIPS (AlexNet) and the encoders")
def _engine(root: str, gan: str, config_path: str, network_mtime: int, config_mtime: int) -> render.ReviewEngine:
    return render.ReviewEngine(root, gan, _config(config_path, config_mtime))


@st.cache_resource(show_spinner=False)
def _directions(root: str, gan: str, layer_range: str, mtime: int) -> render.Directions:
    return render.load_directions(root, gan, layer_range)


def _source_cache() -> dict:
    return st.session_state.setdefault("sources", {})


def _cached_source(key: tuple, make):
    cache = _source_cache()
    if key not in cache:
        cache[key] = make()
    return cache[key]


def main() -> None:
    """The Streamlit page (run by `dermsynth review` through `streamlit run`): one rerun per interaction."""
    st.set_page_config(page_title="dermsynth · direction review", layout="wide")
    settings = _settings()
    root = settings["root"]
    st.title("SeFa direction review")
    generators = render.list_generators(root)
    if not generators:
        st.error(f"No generator with SeFa outputs under {root}/results: run `snakemake` for "
                 "results/latent/<gan>/sefa-<range>.npz first.")
        return
    cfg = _config(settings["config"], _mtime(settings["config"]))
    inversion_gans = cfg.get("latent", {}).get("inversion", {}).get("gans") or None
    file = store.TransformationsFile(settings["transformations"], inversion_gans)
    names = [g.name for g in generators]
    gan = st.sidebar.selectbox("generator", names, key="gan",
                               index=names.index(settings["gan"]) if settings["gan"] in names else 0)
    info = generators[names.index(gan)]
    engine = _engine(str(root), gan, settings["config"], _mtime(info.network), _mtime(settings["config"]))
    identity = (engine.digest, store.checkpoint_hash(info.network))
    layer_range, directions, index, marks, problem = _sidebar(settings, info, file, identity)
    _file_status(file, problem, generators, marks, index, gan, identity)
    if not cfg:
        st.caption(f"No workflow config at `{settings['config']}`: every dataset under results/data can be browsed; "
                   "the LPIPS threshold, ingest and projection settings are the schema's defaults.")
    source = _choose_source(engine, gan)
    if source is None:
        return
    span = _edit_view(engine, source, directions, index, gan)
    if span is not None:
        _decision(file, problem, gan, layer_range, index, span, identity, settings["reviewer"],
                  len(directions.directions), marks)


def _sidebar(settings: dict, info: render.GeneratorInfo, file: store.TransformationsFile, identity: tuple):
    """Layer range and direction choosers, and the table of what the file says of each direction (its names,
    whether they were reviewed on this checkpoint — `identity`: (generator digest, checkpoint SHA-256) —, its
    rejections). Returns (layer range, directions, chosen index, marks, the file's problem)."""
    root, gan = settings["root"], info.name
    side = st.sidebar
    layer_range = side.selectbox("layer range", info.layer_ranges, key="layer_range")
    directions = _directions(str(root), gan, layer_range,
                             _mtime(root / "results" / "latent" / gan / f"sefa-{layer_range}.npz"))
    problem = file.problem()
    marks = {} if problem else file.usage(gan, layer_range, *identity)
    # the option labels stay the same whatever the file says (a selectbox keeps its choice by label);
    # what the file says about each direction is the table below it
    count = len(directions.directions)
    index = side.selectbox("direction (eigenvalue)", list(range(count)),
                           format_func=lambda i: f"#{i}  λ = {directions.eigenvalues[i]:.3f}", key="direction")
    side.dataframe(pd.DataFrame({
        "direction": range(count), "eigenvalue": np.round(directions.eigenvalues, 4),
        "named": [", ".join(marks.get(i, {}).get("names", [])) for i in range(count)],
        "review": ["; ".join(s.describe() for s in marks.get(i, {}).get("reviews", [])) for i in range(count)],
        "rejected": ["; ".join(marks.get(i, {}).get("rejected", [])) for i in range(count)]}),
        hide_index=True, height=260)
    side.caption(f"transformations file: `{file.path}` · reviewer: **{settings['reviewer']}** · "
                 f"generator `{identity[0][:12]}…` · checkpoint sha256 `{identity[1][:12]}…`")
    return layer_range, directions, index, marks, problem


def _file_status(file: store.TransformationsFile, problem, generators: list, marks: dict, index: int, gan: str,
                 identity: tuple) -> None:
    """An invalid file, stale reviews, entries never reviewed on this generator, or this direction's earlier
    rejection: said above the images."""
    if problem:
        st.error(f"The transformations file is invalid and will not be written until it is fixed by hand:\n\n"
                 f"```\n{problem}\n```")
        return
    current = {g.name: (identity if g.name == gan else (None, store.checkpoint_hash(g.network))) for g in generators}
    found = file.stale(current)
    stale = [s for s in found if s.review.state == STALE]
    unreviewed = [s for s in found if s.review.state == NOT_REVIEWED]
    if stale:
        st.warning("Stale reviews (the generator changed since): " + "; ".join(
            f"{s.kind} {s.label} — reviewed on {s.review.reviewed_on[:10] or '?'} on checkpoint "
            f"{s.reviewed[:12]}…" for s in stale) + ". Review each again (accept with 'replace') to record this one.")
    if unreviewed:
        st.warning(f"Shipped, not reviewed here: {', '.join(s.label for s in unreviewed)} — these entries were "
                   "picked on another generator (or written by hand) and never reviewed on this checkpoint: their "
                   "direction indices may show anything here. Review each and accept it again ('replace').")
    if marks.get(index, {}).get("rejected"):
        st.info("This direction was rejected: " + "; ".join(marks[index]["rejected"]))


def _edit_view(engine: render.ReviewEngine, source, directions, index: int, gan: str):
    """Range, magnitude slider, source | inversion | edit with their LPIPS, and the optional strip.
    Returns the (low, high) range, or None when it is invalid."""
    low_col, high_col, _ = st.columns([1, 1, 4])
    low = low_col.number_input("range low", value=-3.0, step=0.5, key="low")
    high = high_col.number_input("range high", value=3.0, step=0.5, key="high")
    if low >= high:
        st.error("The range's low end must be below its high end.")
        return None
    magnitude = st.slider("magnitude (distance in W along the unit direction)", float(low), float(high),
                          min(max(0.0, float(low)), float(high)), step=(high - low) / 60, key="magnitude")
    edit = engine.render(source, directions, index, magnitude)
    columns = st.columns(3)
    with columns[0].container(key="source_image"):
        st.image(render.to_picture(source.image), caption=f"source: {source.label}", width="stretch")
    with columns[1].container(key="inversion_image"):
        st.image(render.to_picture(source.inversion), caption=f"inversion ({source.method})", width="stretch")
    with columns[2].container(key="edited_image"):
        st.image(render.to_picture(edit.image), caption=f"edited: direction #{index} at {magnitude:+.2f}",
                 width="stretch")
    _edit_metrics(engine, edit)
    if st.toggle("strip: this direction on several images across the range", key="show_strip"):
        seeds = render.strip_seeds(source)
        samples = [source] + [_cached_source((gan, "sample", s, 0.7), lambda s=s: engine.sample_source(s))
                              for s in seeds]
        picture, magnitudes, distances = engine.strip(samples, directions, index, float(low), float(high))
        with st.container(key="strip_image"):
            st.image(picture, caption=f"rows: this source, samples of seeds {', '.join(map(str, seeds))} (ψ 0.7) · "
                     "columns: " + ", ".join(f"{m:+.1f}" for m in magnitudes), width="stretch")
        st.dataframe({f"{m:+.1f}": np.round(distances[:, j], 4) for j, m in enumerate(magnitudes)})
    return float(low), float(high)


def _edit_metrics(engine: render.ReviewEngine, edit) -> None:
    metric_col, inv_col, time_col = st.columns(3)
    metric_col.metric("LPIPS (AlexNet) to the source", f"{edit.lpips_to_source:.4f}",
                      delta=f"{edit.lpips_to_source - engine.threshold:+.4f} vs threshold {engine.threshold}",
                      delta_color="inverse")
    inv_col.metric("LPIPS to the inversion", f"{edit.lpips_to_inversion:.4f}")
    time_col.metric("render time", f"{edit.seconds * 1000:.0f} ms")
    if edit.wayward:
        st.warning(f"Wayward at this magnitude: LPIPS {edit.lpips_to_source:.3f} > {engine.threshold} — such images "
                   "are rejected by the transform step.")
    if not engine.lpips_info.get("comparable_to_published"):
        st.caption("LPIPS trunk without ImageNet weights (random init): run `dermsynth fetch-weights` for values "
                   "comparable to the study's.")


def _choose_source(engine: render.ReviewEngine, gan: str):
    """The image chooser; returns the chosen Source, or None while there is none yet (no dataset, no upload, a
    projection to request or running)."""
    kinds = ["random sample", "dataset image", "upload"]
    kind = st.radio("image", kinds, horizontal=True, key="source_kind")
    try:
        if kind == "random sample":
            _settle_projection(None)
            seed_col, psi_col = st.columns(2)
            seed = int(seed_col.number_input("seed", min_value=0, value=0, step=1, key="seed"))
            psi = float(psi_col.slider("truncation ψ", 0.0, 1.0, 0.7, key="psi"))
            return _cached_source((gan, "sample", seed, psi), lambda: engine.sample_source(seed, psi))
        if kind == "dataset image":
            datasets = engine.dataset_choices()
            if not datasets:
                _settle_projection(None)
                st.info("No ingested dataset of this generator under results/data (run the data stage).")
                return None
            dataset = st.selectbox("dataset", datasets, key="dataset")
            images = engine.dataset_images(dataset)
            classes = sorted(images["label"].unique())
            label = st.selectbox("class", classes, key="class")
            chosen = images[images["label"] == label]
            stored = dict(zip(chosen["key"], chosen["stored"]))
            key = st.selectbox("image key", list(chosen["key"]), key="image_key",
                               format_func=lambda k: f"{k} (stored inversion)" if stored[k] else k)
            return _real_source(engine, (gan, "dataset", dataset, key), f"{dataset} {key}",
                                lambda: engine.dataset_source(dataset, key), lambda: engine.dataset_image(dataset, key))
        upload = st.file_uploader("a dermoscopic JPEG or PNG (preprocessed as at ingest, then inverted)",
                                  type=["jpg", "jpeg", "png"], key="upload")
        if upload is None:
            _settle_projection(None)
            return None
        data = upload.getvalue()
        return _real_source(engine, (gan, "upload", upload.file_id), f"upload {Path(upload.name).name}",
                            lambda: engine.upload_source(data, upload.name), lambda: engine.upload_image(data, upload.name))
    except render.UploadRejected as exc:
        st.error(f"This upload cannot be used: {exc}")
    return None


def _real_source(engine: render.ReviewEngine, choice: tuple, label: str, invert, image):
    """A real image's Source: remembered, else inverted at once by the encoders (`invert()`), else — without an
    encoder — the projection, on request (`image()` gives the uint8 (3, R, R) target)."""
    _settle_projection(choice)
    cache = _source_cache()
    if choice in cache:
        return cache[choice]
    try:
        with st.spinner("inverting with the encoders"):
            cache[choice] = invert()
        return cache[choice]
    except render.NoEncoder as exc:
        st.info(f"{exc}.")
    return _projection(engine, choice, label, image)


def _session_id() -> str:
    context = get_script_run_ctx()
    return context.session_id if context is not None else ""


def _session_alive():
    """A check the worker thread calls: is this browser session still connected? (Always true without a
    Streamlit runtime, as under AppTest.)"""
    if not runtime.exists():
        return lambda: True
    instance, session = runtime.get_instance(), _session_id()
    return lambda: instance.is_active_session(session)


def _settle_projection(choice) -> None:
    """Cancel (and forget) this session's projection when it is for another choice than `choice` (None: no
    projection wanted), waiting up to a few seconds for its thread to end."""
    job = st.session_state.get("projection")
    if job is None or job.key == choice:
        return
    if job.running:
        job.cancel("the choice changed")
        with st.spinner(f"stopping the projection of {job.label}"):
            job.wait(10)
    del st.session_state["projection"]


def _projection(engine: render.ReviewEngine, choice: tuple, label: str, image):
    """The projection of the chosen image, on request: its result when finished, its progress while it runs, else
    the button that starts it (disabled while another projection runs on this server). Returns the Source or
    None."""
    job = st.session_state.get("projection")
    if job is not None and job.key == choice:
        if job.state == jobs.FINISHED:
            _source_cache()[choice] = job.result
            del st.session_state["projection"]
            return job.result
        if job.running:
            _projection_progress(job)
            return None
        if job.state == jobs.FAILED:
            st.error(f"The projection failed: {job.error}")
        else:
            st.info(f"The projection was cancelled ({job.reason}) at step {job.done}/{job.total}.")
    running = jobs.SLOT.current if jobs.SLOT.current is not None and jobs.SLOT.current.running else None
    if running is not None:
        st.warning(f"Another projection is running on this server ({running.label}: step {running.done}/"
                   f"{running.total}); one runs at a time, so this one can start when it ends.")
    steps_col, button_col = st.columns([1, 3], vertical_alignment="bottom")
    steps = int(steps_col.number_input("projection steps", min_value=1, value=engine.projection_steps(), step=100,
                                       key="projection_steps"))
    if button_col.button(f"Project into W ({steps} steps: minutes on a CPU)", key="project",
                         disabled=running is not None):
        target = image()
        job = jobs.Job(choice, label, steps, _session_id(), _session_alive())
        try:
            jobs.SLOT.start(job, lambda on_step: engine.project_source(target, label, steps, on_step))
        except jobs.Busy as exc:
            st.warning(str(exc))
            return None
        st.session_state["projection"] = job
        st.rerun()
    return None


@st.fragment(run_every=1.0)
def _projection_progress(job: jobs.Job) -> None:
    """The running projection's steps (redrawn every second), with its Cancel button; the whole page reruns when
    it has ended."""
    if not job.running:
        st.rerun()
    st.progress(min(job.done / max(job.total, 1), 1.0), text=f"projection of {job.label}: {job.done}/{job.total} "
                "steps")
    if st.button("Cancel the projection", key="cancel_projection"):
        job.cancel("cancelled on the page")
        job.wait(10)
        st.rerun()


def _decision(file: store.TransformationsFile, problem, gan, layer_range, index, magnitude, identity, reviewer,
              count, marks) -> None:
    st.subheader("Decision")
    if problem:
        st.info("Saving is disabled while the transformations file is invalid.")
        return
    used = marks.get(index, {}).get("names", [])
    if used:
        st.caption(f"This direction is already named: {', '.join(used)} (accepting under that name with "
                   "'replace' updates the entry).")
    name_col, description_col = st.columns([1, 3])
    name = name_col.text_input("name (letters, digits, '-', '_')", key="name")
    description = description_col.text_input("description: what the direction changes", key="description")
    replace = st.checkbox("replace the entry of that name if it exists", key="replace")
    reason = st.text_input("reason (when rejecting)", key="reason")
    accept_col, reject_col, _ = st.columns([1, 1, 4])
    try:
        if accept_col.button("Accept", type="primary", key="accept"):
            entry = file.accept(name=name, description=description, gan=gan, layer_range=layer_range,
                                direction=int(index), magnitude=magnitude, checkpoint_sha256=identity[1],
                                reviewed_by=reviewer, direction_count=count, replace=replace,
                                generator=identity[0])
            st.session_state["saved"] = (f"Saved transformation {entry['name']} ({gan} {layer_range} #{index}, "
                                         f"magnitude {entry['magnitude']}) to {file.path}. `snakemake -n` now "
                                         "lists its jobs.")
            st.rerun()  # the direction table shows the new entry
        if reject_col.button("Reject", key="reject"):
            file.reject(gan=gan, layer_range=layer_range, direction=int(index), reason=reason,
                        checkpoint_sha256=identity[1], reviewed_by=reviewer, direction_count=count,
                        generator=identity[0])
            st.session_state["saved"] = f"Recorded {gan} {layer_range} #{index} as rejected in {file.path}."
            st.rerun()
    except store.ReviewError as exc:
        st.error(str(exc))
    if "saved" in st.session_state:
        st.success(st.session_state.pop("saved"))


main()
