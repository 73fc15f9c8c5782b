"""`dermsynth bench gan-peer`: NVIDIA's stylegan2-ada-pytorch trained like ours and timed alike (issue 32).

The peer's source is fetched by bench/fetch-peer into the git-ignored bench/peers/ (its licence is non-commercial:
never committed); CI has no GitHub access, so the tests that run it are skipped there with that reason. The
old-operator shims the run-time patches supply are checked without it, against PyTorch's own autograd. No speed is
asserted (figures go to docs/benchmarks.md).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from dermsynth.bench.gan import _trainer
from dermsynth.bench.peer import (OLD_JIT_OPERATIONS, SETTINGS, PeerTrainer, expected_phase_counts, load_peer,
                                  our_settings, peer_config, their_backend_flags)
from dermsynth.cli import main

from .conftest import REPO

PEER = REPO / "bench" / "peers" / "stylegan2-ada-pytorch"
needs_peer = pytest.mark.skipif(
    not (PEER / "training" / "networks.py").is_file(),
    reason="NVIDIA's stylegan2-ada-pytorch is not in bench/peers/ (bench/fetch-peer needs GitHub, which CI lacks; "
           "its non-commercial licence keeps it out of the repository)")


# --- the shims for operators PyTorch dropped (no peer needed) ----------------------------------------------------
@pytest.mark.parametrize("transposed", [False, True])
def test_the_old_convolution_weight_gradient_matches_autograd(transposed):
    """cudnn_convolution[_transpose]_backward_weight's calling convention, computed by convolution_backward: the
    weight's gradient autograd gives for the same convolution (stride 2, padding 1, 2 groups)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 9, 9, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)  # in 4, out 6 in 2 groups
    if transposed:
        y = F.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1, groups=2)
    else:
        w = torch.randn(6, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
        y = F.conv2d(x, w, stride=2, padding=1, groups=2)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    expected, = torch.autograd.grad(y, w, dy)
    name = "aten::cudnn_convolution_transpose_backward_weight" if transposed else "aten::cudnn_convolution_backward_weight"
    got = OLD_JIT_OPERATIONS[name](w.shape, dy, x, (1, 1), (2, 2), (1, 1), 2, False, False, False)
    assert got.shape == w.shape
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_the_old_grid_sampler_backward_gives_both_gradients():
    """grid_sampler_2d_backward as torch ≤ 1.9 called it (no output_mask): autograd's gradients of grid_sample
    (bilinear, zeros, align_corners False) with respect to the input and the grid."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    grid = (torch.rand(2, 5, 5, 2, generator=g, dtype=torch.float64) * 2.2 - 1.1).requires_grad_(True)
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    expected = torch.autograd.grad(y, [x, grid], dy)
    got = OLD_JIT_OPERATIONS["aten::grid_sampler_2d_backward"](dy, x.detach(), grid.detach(), 0, 0, False)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_a_missing_peer_is_one_line_naming_the_fetch_script(tmp_path, capsys):
    code = main(["bench", "gan-peer", "--quick", "--peer", str(tmp_path / "nowhere"), "--workdir", str(tmp_path / "w"),
                 "--out", str(tmp_path / "bench.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "bench/fetch-peer" in err[0] and "nowhere" in err[0]


# --- their code, patched, on the CPU -----------------------------------------------------------------------------
@needs_peer
def test_their_twice_differentiable_grid_sample_runs_patched_and_is_the_adjoint(monkeypatch):
    """R1 through ADA's geometric augmentation differentiates grid_sample's backward again. Unpatched, their custom
    op switches itself off on this PyTorch (a warning, then F.grid_sample); patched it runs, and its second
    derivative is right: d/dw ⟨∂⟨w, gs(x)⟩/∂x, v⟩ = gs(v), since ∂⟨w, gs(x)⟩/∂x = gsᵀ(w)."""
    peer = load_peer(PEER)
    gradfix = peer.grid_sample_gradfix
    monkeypatch.setattr(gradfix, "enabled", True)  # as their training loop sets it
    with monkeypatch.context() as unpatched:
        unpatched.setattr(gradfix, "torch", torch)
        with pytest.warns(UserWarning, match="not supported on PyTorch"):
            assert not gradfix._should_use_custom_op()
    assert gradfix._should_use_custom_op()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)
    grid = torch.rand(2, 8, 8, 2, generator=g, dtype=torch.float64) * 2 - 1
    w = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    dx, = torch.autograd.grad((w * gradfix.grid_sample(x, grid)).sum(), x, create_graph=True)
    assert "_GridSample2dBackward" in type(dx.grad_fn).__name__  # their op's backward, through the shimmed aten op
    dw, = torch.autograd.grad((dx * v).sum(), w)
    torch.testing.assert_close(dw, F.grid_sample(v, grid, align_corners=False), rtol=1e-10, atol=1e-10)


@needs_peer
@pytest.mark.parametrize("transpose", [False, True])
def test_their_conv2d_gradfix_op_gives_autograds_gradients_with_the_shim(transpose):
    """Their custom conv2d and conv_transpose2d (CUDA-only in training; called here directly on the CPU) compute
    their weight gradients with the shimmed operators: first and second derivatives equal PyTorch's own, and under
    no_weight_gradients the weight gets none."""
    peer = load_peer(PEER)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 7, 7, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4 if transpose else 5, 5 if transpose else 4, 3, 3, generator=g, dtype=torch.float64,
                    requires_grad=True)
    stride, output_padding = (2, 1) if transpose else (1, 0)
    op = peer.conv2d_gradfix._conv2d_gradfix(transpose=transpose, weight_shape=w.shape, stride=stride, padding=1,
                                             output_padding=output_padding, dilation=1, groups=1)

    def theirs(a, b):
        return op.apply(a, b, None)

    def pytorchs(a, b):
        if transpose:
            return F.conv_transpose2d(a, b, stride=2, padding=1, output_padding=1)
        return F.conv2d(a, b, padding=1)

    results = []
    for conv in (theirs, pytorchs):
        y = conv(x, w)
        dx, dw = torch.autograd.grad(y.square().sum(), [x, w], create_graph=True)
        results.append([dx, dw, *torch.autograd.grad(dx.square().sum(), [x, w])])  # R1-like: of the gradient
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    with peer.conv2d_gradfix.no_weight_gradients():
        dx, dw = torch.autograd.grad(op.apply(x, w, None).sum(), [x, w], allow_unused=True)
    assert dw is None and dx is not None


@needs_peer
def test_their_plugin_loader_finds_the_module_it_built(tmp_path, monkeypatch):
    """Their get_plugin builds with torch.utils.cpp_extension.load, drops its result and imports the module by
    name; today's loader runs it without a sys.modules entry, and a module with multi-phase initialisation
    (pybind11 3's) makes none itself: unpatched, every plugin falls back to their reference ops (on a GPU too). Shown with a one-function C++ extension (no CUDA: no GPU or nvcc needed) built through their
    loader: unpatched it cannot be imported, patched the same build loads and answers."""
    peer = load_peer(PEER)
    source = tmp_path / "src" / "probe.cpp"
    source.parent.mkdir()
    source.write_text(  # the Python C API with multi-phase initialisation, as pybind11 3 (torch's) builds plugins;
        # it compiles in a second, torch's headers take minutes here. TORCH_EXTENSION_NAME: the name load gives it
        "#include <Python.h>\n#define JOIN2(a, b) a##b\n#define JOIN(a, b) JOIN2(a, b)\n"
        "#define TEXT2(a) #a\n#define TEXT(a) TEXT2(a)\n"
        "static PyObject* answer(PyObject*, PyObject*) { return PyLong_FromLong(42); }\n"
        "static PyMethodDef methods[] = {{\"answer\", answer, METH_NOARGS, nullptr}, {nullptr, nullptr, 0, nullptr}};\n"
        "static PyModuleDef_Slot slots[] = {{0, nullptr}};\n"
        "static struct PyModuleDef definition = {PyModuleDef_HEAD_INIT, TEXT(TORCH_EXTENSION_NAME), nullptr, 0, "
        "methods, slots};\n"
        "PyMODINIT_FUNC JOIN(PyInit_, TORCH_EXTENSION_NAME)(void) { return PyModuleDef_Init(&definition); }\n")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    monkeypatch.setenv("DERMSYNTH_EXTENSIONS_DIR", str(tmp_path / "ours"))
    name = "dermsynth_peer_probe_plugin"
    with pytest.raises(ModuleNotFoundError, match=name):
        peer.custom_ops.get_plugin.original(name, sources=[str(source)])
    module = peer.custom_ops.get_plugin(name, sources=[str(source)])
    assert module.answer() == 42


def _tiny_peer(peer, augment_p=0.2, batch=2):
    class Args:  # the benchmark's own settings at the --quick sizes
        pass
    args = Args()
    args.batch, args.channel_base = batch, 256
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ours = _trainer(args, "reference", 0, False, images, torch.device("cpu"))
    config = peer_config(ours.options, our_settings(ours))
    config["loop"]["augment_p"] = augment_p
    return PeerTrainer(peer, config, images, torch.device("cpu")), config


@needs_peer
def test_their_phases_run_and_move_their_weights():
    """17 iterations: Gmain and Dmain every one, path length at 0, 4, …, 16 (5), R1 at 0 and 16 (2); every G and D
    parameter tensor moves, G_ema follows, the path-length mean leaves 0 and ADA's p moves by its steps."""
    peer = load_peer(PEER)
    with their_backend_flags():
        trainer, config = _tiny_peer(peer, augment_p=1.0)  # every augmentation on: R1 through the geometric ones
        before = {n: [p.detach().clone() for p in getattr(trainer, n).parameters()] for n in ("G", "D", "G_ema")}
        for _ in range(17):
            trainer.step()
    assert trainer.phase_counts == {"Gmain": 17, "Greg": 5, "Dmain": 17, "Dreg": 2} == expected_phase_counts(17, 4, 16)
    for name in ("G", "D", "G_ema"):
        moved = [not torch.equal(a, b) for a, b in zip(before[name], getattr(trainer, name).parameters())]
        assert all(moved), (name, moved.count(False))
    assert float(trainer.loss.pl_mean) > 0
    # ADA adjusted p 4 times (after steps 4, 8, 12, 16), each by ±batch·4/(ada_kimg·1000): an even number of steps
    step = config["loop"]["batch_size"] * 4 / (config["loop"]["ada_kimg"] * 1000)
    moves = (float(trainer.augment_pipe.p) - 1.0) / step  # p is a float32 buffer: a few thousandths of a step off
    assert abs(moves - round(moves)) < 0.05 and round(moves) in (-4, -2, 0, 2, 4)


@needs_peer
def test_gan_peer_quick_on_cpu_records_equal_settings_and_the_ratio(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "gan-peer", "--quick", "--compare", "--peer", str(PEER), "--workdir", str(tmp_path / "w"),
                 "--out", str(out)]) == 0
    peer_row, ratio = json.loads(out.read_text())["gan-peer"]["results"]
    assert (peer_row["what"], peer_row["variant"], peer_row["status"]) == ("gan_peer", "peer-fp32", "ok")
    assert (peer_row["resolution"], peer_row["batch"], peer_row["channel_base"], peer_row["steps"]) == (16, 2, 256, 16)
    assert peer_row["sec_per_kimg"] > 0 and peer_row["peak_memory_gb"] is None
    assert peer_row["ops"] == {"bias_act": "reference (CPU)", "upfirdn2d": "reference (CPU)"}
    assert peer_row["grid_sample_gradfix"].startswith("custom op")
    assert peer_row["phase_counts"] == peer_row["expected_phase_counts"] == {"Gmain": 17, "Greg": 5, "Dmain": 17,
                                                                             "Dreg": 2}
    for name in ("G", "D"):
        changed, total = peer_row["weights_changed"][name]
        assert total > 10 and changed == total
    assert peer_row["pl_mean_end"] > 0
    assert {p["module"] for p in peer_row["peer_patches"]} == {
        "torch_utils.custom_ops", "torch_utils.ops.grid_sample_gradfix", "torch_utils.ops.conv2d_gradfix"}
    assert peer_row["backend_flags"] == {"cudnn_benchmark": True, "cudnn_allow_tf32": False, "matmul_allow_tf32": False}
    assert peer_row["peer_commit"] and peer_row["peer_warnings"] == []
    # every shared setting equal, read from both built trainers; some checked against numbers worked out here
    table = {row["key"]: row for row in peer_row["settings"]}
    assert set(table) == set(SETTINGS) and peer_row["settings_differing"] == []
    for row in table.values():  # the table's own verdict, and this test's
        same = (math.isclose(row["ours"], row["peer"], rel_tol=1e-9) if isinstance(row["ours"], float)
                else row["ours"] == pytest.approx(row["peer"]) if isinstance(row["ours"], list) and row["ours"]
                and isinstance(row["ours"][0], float) else row["ours"] == row["peer"])
        assert row["equal"] and same, row
    assert table["G_channels"]["peer"] == {"4": 64, "8": 32, "16": 16}  # min(256 / res, 512)
    assert table["G_parameters"]["peer"] == table["G_parameters"]["ours"] > 0
    assert math.isclose(table["G_lr"]["peer"], 0.0025 * 4 / 5) and math.isclose(table["D_lr"]["peer"], 0.0025 * 16 / 17)
    assert table["D_betas"]["peer"] == pytest.approx([0.0, 0.99 ** (16 / 17)])
    assert (table["mbstd_group_size"]["peer"], table["r1_gamma"]["peer"], table["augment_p_start"]["peer"]) == (4, 1.0, 0.2)
    assert len(table["augment_transformations"]["peer"]) == 12
    # ours beside it, same sizes and clock: the ratio is the peer's sec/kimg over ours
    assert (ratio["what"], ratio["ours_variant"], ratio["ours"]["steps"]) == ("gan_peer_vs_ours", "reference-fp32", 16)
    assert ratio["ours_speedup"] == pytest.approx(ratio["peer_sec_per_kimg"] / ratio["ours_sec_per_kimg"], rel=1e-2)
    assert ratio["ours"]["backend_flags"] == peer_row["backend_flags"]  # like for like: their cuDNN/TF32 settings


def test_the_mixed_peer_variant_is_refused_on_cpu(tmp_path, capsys):
    code = main(["bench", "gan-peer", "--quick", "--variants", "peer-mixed", "--peer", str(PEER),
                 "--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "b.json")])
    assert code == 2 and "CUDA only" in capsys.readouterr().err
