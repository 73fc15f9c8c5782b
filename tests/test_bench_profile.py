"""`dermsynth bench gan-profile` and `gan-graph-breaks` on the CPU at tiny sizes (16², batch 2, channel_base 256).

No timing is asserted: that the files hold every section, that the shares add up, that the scalar reads the
profiler saw are the ones an independent count (a dispatch mode over the same steps) sees, that the categories
find the work they name, and that the graph-break record has a count per compiled pass."""

from __future__ import annotations

import argparse
import gzip
import json
import re

import pytest
import torch
from torch.autograd import DeviceType
from torch.autograd.profiler_util import FunctionEvent
from torch.utils._python_dispatch import TorchDispatchMode

from dermsynth.bench.gan import CYCLE, _trainer
from dermsynth.bench.graph_breaks import COMPILED, PASSES
from dermsynth.bench.profile import CATEGORIES, STACK_STEPS, STEP_LABEL, WINDOW_LABEL, gpu_idle, summarise
from dermsynth.cli import main

TINY = ["--device", "cpu", "--resolutions", "16", "--batch", "2", "--channel-base", "256", "--warmup", "1"]
SECTIONS = ["# GAN step profile", "## Top ops", "## Launches per step", "## By category", "## By phase",
            "## Host↔device synchronisations", "## GPU idle inside the window", "Chrome trace"]


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("gan-profile")
    assert main(["bench", "gan-profile", *TINY, "--out", str(out)]) == 0
    return out, json.loads((out / "profile.json").read_text())


def test_profile_files_hold_every_section(profiled):
    out, profile = profiled
    assert (profile["variant"], profile["resolution"], profile["batch"], profile["channel_base"]) == \
        ("reference-fp32", 16, 2, 256)
    assert profile["warmup_steps"] == CYCLE and profile["window_steps"] == f"{CYCLE}–{2 * CYCLE - 1}"
    assert profile["basis"] == "self CPU time" and profile["gpu_idle"] is None
    assert len(profile["top"]) > 5 and all(r["calls"] > 0 and r["total_ms"] >= 0 for r in profile["top"])
    assert [r["total_ms"] for r in profile["top"]] == sorted((r["total_ms"] for r in profile["top"]), reverse=True)
    launches = profile["launches"]
    assert launches["aten_ops_per_step"] >= launches["top_level_aten_ops_per_step"] > 50
    report = (out / "profile.md").read_text()
    assert all(section in report for section in SECTIONS), report[:2000]
    trace_file = out / profile["trace"]["file"]
    opener = gzip.open if trace_file.suffix == ".gz" else open
    with opener(trace_file, "rt") as handle:  # a Chrome trace of the window's 16 steps (read as text: 100+ MB)
        text = handle.read()
    assert text.lstrip().startswith("{") and '"traceEvents"' in text
    assert len(re.findall(rf'"name":\s*"{re.escape(STEP_LABEL)}"', text)) == CYCLE


def test_shares_sum_to_one_and_categories_find_their_work(profiled):
    _, profile = profiled
    for table in ("by_category", "by_phase"):
        assert sum(v["share"] for v in profile[table].values()) == pytest.approx(1.0, abs=2e-3), table
    assert set(profile["by_category"]) == set(CATEGORIES)
    total_ms = sum(v["ms"] for v in profile["by_category"].values())
    assert total_ms == pytest.approx(sum(v["ms"] for v in profile["by_phase"].values()), rel=1e-3)
    # the reference path of every kind of work the step does is found by its rule
    for name in ("upfirdn2d", "bias_act", "convolution", "matmul", "optimizer (Adam)", "ADA augmentation"):
        assert profile["by_category"][name]["share"] > 0, name
    if profile["phase_labels"] == "present":  # GanTrainer.step labels its phases: one cycle holds all of them
        assert all(profile["by_phase"][p]["share"] > 0 for p in ("Gmain", "Greg", "Dmain", "Dreg", "ema"))
        assert profile["regularisation_share"] > 0
    else:
        assert set(profile["by_phase"]) == {"unlabelled"} and profile["regularisation_share"] is None


class _ScalarReads(TorchDispatchMode):
    """Counts aten._local_scalar_dense (what .item(), float(t), bool(t) dispatch) below autograd."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_sync_count_matches_an_independent_count(profiled):
    """The same trainer (same seed, so the same style-mixing draws) over the same steps, counted by a dispatch mode."""
    _, profile = profiled
    args = argparse.Namespace(batch=2, channel_base=256)
    images = torch.randint(0, 256, (2 * 4, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    trainer = _trainer(args, "reference", 0, False, images, torch.device("cpu"))
    for _ in range(profile["warmup_steps"]):
        trainer.step()
    window, stack_window = _ScalarReads(), _ScalarReads()
    with window:
        for _ in range(CYCLE):
            trainer.step()
    with stack_window:
        for _ in range(STACK_STEPS):
            trainer.step()
    syncs = profile["syncs"]
    assert window.count > 0 and syncs["scalar_reads_total"] == window.count
    assert syncs["scalar_reads_per_step"] == pytest.approx(window.count / CYCLE, abs=0.01)
    assert syncs["runtime_syncs_total"] == 0  # no CUDA on the CPU
    assert sum(site["scalar_reads"] for site in syncs["sites"]) == stack_window.count
    # the losses the step reads back are found at their lines in the trainer
    assert any(site["site"].startswith("gan/training.py:") for site in syncs["sites"]), syncs["sites"]


def test_gpu_idle_is_the_window_minus_the_union_of_busy_intervals():
    # busy [0, 20) ∪ [30, 40) after clipping to the window [0, 50): 30 µs of 50
    idle = gpu_idle([(5, 20), (0, 10), (30, 40), (45, 70), (-10, -5)], 0, 50)
    assert idle == {"window_ms": 0.05, "busy_ms": 0.035, "idle_ms": 0.015, "idle_share": 0.3}


def _event(id, name, start, end, parent=None, device=False, kind=None, linked=0):
    """A profiler event as `prof.events()` gives it (times in µs), hung under `parent` as the profiler's tree does."""
    event = FunctionEvent(id=id, name=name, thread=1, start_us=start, end_us=end, linked_correlation_id=linked,
                          device_type=DeviceType.CUDA if device else DeviceType.CPU, activity_type=kind)
    if parent is not None:
        event.set_cpu_parent(parent)
        parent.append_cpu_child(event)
    return event


def test_cuda_window_is_read_by_launch_phase_kernel_name_and_device_intervals():
    """The CUDA path of `summarise` on a hand-made window (no GPU here): kernels take the phase their launch was in
    (not the one they ran in), their category from their own or their launcher's name; the GPU's idle time is the
    window minus the union of kernel and copy intervals; a scalar read that synchronised counts as a device read."""
    window = _event(1, WINDOW_LABEL, 0, 100)
    step = _event(2, STEP_LABEL, 0, 90, window)
    gmain, dmain = _event(3, "Gmain", 0, 30, step), _event(4, "Dmain", 30, 80, step)  # the conv runs in Dmain's time
    conv, copy = _event(10, "aten::conv2d", 1, 3, gmain), _event(11, "aten::copy_", 4, 5, gmain)
    mul = _event(12, "aten::mul", 41, 42, dmain)
    adam = _event(13, "Optimizer.step#Adam.step", 50, 60, dmain)
    fused_adam = _event(14, "aten::_fused_adam_", 51, 55, adam)
    read = _event(15, "aten::_local_scalar_dense", 60, 70, dmain)
    events = [window, step, gmain, dmain, conv, copy, mul, adam, fused_adam, read,
              _event(20, "cudaLaunchKernel", 1.5, 2.5, conv, linked=10),
              _event(21, "cudaLaunchKernel", 41.2, 41.8, mul, linked=12),
              _event(22, "cudaLaunchKernel", 52, 53, fused_adam, linked=14),
              _event(23, "cudaStreamSynchronize", 61, 69, read, linked=15),
              _event(24, "cudaDeviceSynchronize", 90, 99, window),  # the window's own end: not the step's
              _event(30, "sm90_xmma_fprop_implicit_gemm_f32f32", 30, 44, device=True, kind="kernel", linked=10),
              _event(31, "Memcpy HtoD (Pageable -> Device)", 5, 8, device=True, kind="gpu_memcpy", linked=11),
              _event(32, "void (anonymous namespace)::upfirdn2d_kernel<float>(float const*)", 44, 52, device=True,
                     kind="kernel", linked=12),
              _event(33, "void at::native::fused_adam_kernel<float>()", 56, 66, device=True, kind="kernel",
                     linked=14),
              _event(34, "Gmain", 0, 30, device=True, kind="gpu_user_annotation")]  # a label mirrored: not work
    profile = summarise(events, 1, cuda=True)
    ms = {name: v["ms"] * 1000 for name, v in profile["by_category"].items() if v["ms"]}
    assert ms == pytest.approx({"convolution": 14, "upfirdn2d": 8, "optimizer (Adam)": 10, "other": 3})
    assert {k: v["ms"] * 1000 for k, v in profile["by_phase"].items()} == pytest.approx({"Gmain": 17, "Dmain": 18})
    assert profile["gpu_idle"] == {"window_ms": 0.1, "busy_ms": 0.035, "idle_ms": 0.065, "idle_share": 0.65}
    assert profile["launches"] == {"kernels_per_step": 3, "runtime_launch_calls_per_step": 3, "memcpy_per_step": 1,
                                   "memset_per_step": 0}
    syncs = profile["syncs"]
    assert (syncs["scalar_reads_total"], syncs["scalar_reads_from_device"], syncs["runtime_syncs_by_name"]) == \
        (1, 1, {"cudaStreamSynchronize": 1})
    assert profile["top"][0]["name"].startswith("sm90_xmma_fprop") and profile["top"][0]["share"] == 0.4
    assert profile["regularisation_share"] == 0


def test_one_variant_is_profiled(tmp_path, capsys):
    assert main(["bench", "gan-profile", *TINY, "--variants", "fused-fp32", "reference-fp32",
                 "--out", str(tmp_path)]) == 2
    assert "gan-profile profiles one variant" in capsys.readouterr().err


def test_graph_breaks_are_counted_per_compiled_pass(tmp_path):
    assert main(["bench", "gan-graph-breaks", *TINY, "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "graph_breaks.json").read_text())
    modules = record["modules"]
    assert set(modules) == {f"{name} ({ops} ops)" for name in PASSES for ops in ("reference", "fused")}
    for name, m in modules.items():
        if "fused" in name:  # no CUDA here
            assert m["status"] == "unavailable"
            continue
        assert m["status"] == "ok" and m["graphs"] == m["graph_breaks"] + 1 and m["ops"] > 0, m
        assert (m["graph_breaks"] == 0) == (not m["reasons"]), m
        assert m["compiled_by_the_trainer"] == (name.split(" (")[0] in COMPILED)
    assert record["total_graph_breaks"] == sum(m.get("graph_breaks", 0) for m in modules.values()
                                               if m.get("compiled_by_the_trainer"))
    # the regularisation passes differentiate inside the pass: dynamo stops at torch.autograd.grad by default
    for name in ("Greg path lengths(ws) (reference ops)", "Dreg R1 penalty(images) (reference ops)"):
        assert any("autograd.grad" in r["reason"] for r in modules[name]["reasons"]), modules[name]
    assert (tmp_path / "graph_breaks.md").read_text().startswith("# Graph breaks")
