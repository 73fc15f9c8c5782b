"""bench/gpu-check, the prepared GPU verification run, exercised on CPU at tiny sizes (no speed asserted):
every step runs or is recorded as skipped with a reason, a failing step is recorded and the run goes on,
and the results come back as the four files the device machine can return."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dermsynth.bench.gan import _FlopCount, peak_tflops

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu-check"


def _run(tmp_path, *extra, timeout=900):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny networks: threads only contend with each other
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--work", str(tmp_path / "work"),
                             "--no-install", *extra], capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                            env=env)
    return result, out


@pytest.mark.slow  # ≈ 3 minutes: every step once at tiny sizes (run it before taking the script to a GPU)
def test_quick_cpu_run_completes_every_step(tmp_path):
    result, out = _run(tmp_path, "--device", "cpu", "--quick", "--budget", "600")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu-check.log", "junit-no-sync.xml", "junit-parity.xml",
                                                     "profile", "results.json", "results.md"]
    assert {"profile.json", "profile.md", "graph_breaks.json"} <= {p.name for p in (out / "profile").iterdir()}
    results = json.loads((out / "results.json").read_text())
    status = {s["step"]: s["status"] for s in results["steps"]}
    assert status["environment"] == status["parity"] == status["gan-train:reference-fp32"] == "ok"
    assert status["no-sync"] == status["profile"] == status["graph-breaks"] == "ok"
    assert results["profile"]["profile.json"]["phase_labels"] == "present"
    peer_present = (REPO / "bench/peers/stylegan2-ada-pytorch/training/networks.py").is_file()
    assert status["peer"] == ("ok" if peer_present else "skipped")  # CI has no copy: skipped, saying how to get one
    if peer_present:
        ratio, = [r for r in results["peer"] if r["what"] == "gan_peer_vs_ours"]
        assert ratio["ours_speedup"] > 0 and "| peer-fp32 | reference-fp32 |" in (out / "results.md").read_text()
    assert status["gan-train:fused-fp32-tiled"] == "skipped"  # fused variants: CUDA only
    assert status["gan-flops"] == "ok" and results["gan_flops"]["flops_per_kimg"] > 0
    assert all(status[s] == "ok" for s in ("metrics", "classify-train", "project", "invert"))
    assert status["install"] == status["build"] == status["gan-train:fused-fp32-compiled"] == "skipped"
    assert all(s.get("reason") for s in results["steps"] if s["status"] == "skipped")
    assert results["parity"]["tests"] > 0 and results["parity"]["failures"] == 0
    gan, = results["gan_train"]
    assert gan["variant"] == "reference-fp32" and gan["sec_per_kimg"] > 0 and gan["model_tflop_per_kimg"] > 0
    assert {r["architecture"] for r in results["stages"]["classify-train"]} == {"densenet169", "efficientnet_b2"}
    assert [r["batch"] for r in results["stages"]["project"]] == [1, 2]
    assert {r["method"] for r in results["stages"]["invert"]} == {"e4e", "e4e+hyperstyle"}
    report = (out / "results.md").read_text()
    assert "| gan-train:reference-fp32 | ok |" in report and "## invert" in report


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_failing_step_is_recorded_and_the_run_goes_on(tmp_path):
    # 24 s: environment and build run (a started step gets at least 20 s); every later step needs ≥ 20 s, so is skipped
    result, out = _run(tmp_path, "--device", "cuda", "--budget", "24", timeout=300)
    assert result.returncode == 1
    results = json.loads((out / "results.json").read_text())
    steps = {s["step"]: s for s in results["steps"]}
    assert steps["build"]["status"] == "failed"
    assert any("no CUDA device" in line for line in steps["build"]["tail"])
    later = [s for s in results["steps"] if s["step"] not in ("environment", "install", "build")]
    assert later and all(s["status"] == "skipped" for s in later)
    # a step with its own reason to skip keeps it (CI has no bench/peers copy: the peer says how to get one)
    own = {"peer": "bench/fetch-peer"}
    assert all("time budget" in s["reason"] or own.get(s["step"], "\0") in s["reason"] for s in later), \
        [s["reason"] for s in later]
    assert "| build | failed |" in (out / "results.md").read_text()


def test_flop_count_matches_the_formulas():
    """2·M·N·K per matrix product; a convolution is 2·N·Cout·Hout·Wout·Cin·kh·kw; backward of a linear
    layer computes the input and the weight gradients, twice the forward's products."""
    x, w = torch.randn(8, 64, requires_grad=True), torch.randn(32, 64, requires_grad=True)
    counter = _FlopCount()
    with counter.mode:
        y = F.linear(x, w)
    assert counter.total == 2 * 8 * 64 * 32
    with counter.mode:
        y.sum().backward()
    assert counter.total == 3 * (2 * 8 * 64 * 32)
    image, kernel = torch.randn(2, 3, 16, 16), torch.randn(5, 3, 3, 3)
    counter = _FlopCount()
    with counter.mode:
        F.conv2d(image, kernel, padding=1)
    assert counter.total == 2 * 2 * 5 * 16 * 16 * 3 * 3 * 3


def test_peak_lookup_by_device_name():
    assert peak_tflops("NVIDIA H200") == 989.5
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops("Tesla V100-SXM2-16GB") == 125.0
    assert peak_tflops("cpu") is None
