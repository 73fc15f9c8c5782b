"""NVIDIA's stylegan2-ada-pytorch as a benchmark peer: `dermsynth bench gan-peer` (issue 32).

Their training iteration, configured like ours (`bench.gan.bench_options`: the schema's `gans.*` defaults, ADA bgc at
p = 0.2, γ = 1, `--batch`, `--channel-base`), timed with our clock (`bench.gan.time_training`: the same warm-up, the
same whole 16-step regularisation cycles, CUDA synchronisation and `time.perf_counter`), so that its sec/kimg and
ours are measured alike — with `--compare`, ours in the same process, reported as a ratio.

Licence: stylegan2-ada-pytorch is under the NVIDIA Source Code License-NC (non-commercial). Its source lives in a
git-ignored folder (`bench/peers/stylegan2-ada-pytorch`, fetched by `bench/fetch-peer`), is imported from `--peer`
at run time and is never committed, copied or paraphrased into this project; this module only calls its classes
(`training.networks.Generator`/`Discriminator`, `training.loss.StyleGAN2Loss`, `training.augment.AugmentPipe`,
`torch_utils.training_stats`, `torch_utils.misc`).

What one `PeerTrainer.step()` runs is what one iteration of their `training/training_loop.py` runs, as calls to
their API: fresh latents for each of the four phases; Gmain every step, Greg every `pl_interval` (4), Dmain every
step, Dreg every `r1_interval` (16), each phase zeroing its optimiser's gradients, enabling its module's gradients,
calling `StyleGAN2Loss.accumulate_gradients` with gain = the phase's interval, replacing non-finite gradients and
stepping Adam, whose learning rate and betas carry the lazy-regularisation ratio interval/(interval + 1); then the
G_ema update (half-life `ema_kimg`, ramp-up `ema_rampup`) and, every `ada_interval` (4) steps, their ADA
adjustment of p from the collected signs of D(real). Their loop's cuDNN settings (benchmark on, TF32 off) are in
effect while the peer builds and runs (`their_backend_flags`), and while ours is timed beside it (`--compare`), so
the ratio compares like with like; both are recorded. Real images come from the same in-memory uint8 tensor as ours, in the same seeded order
(`gan.training.ResumableBatches`), x-flipped at random like ours (`mirror`); data loading is outside both clocks.

Their code was written for PyTorch 1.7–1.9; what no longer works on today's PyTorch is patched at run time, in
their module namespaces only, never in their files (`apply_patches`; each patch is listed in the JSON as
`peer_patches`). On CUDA their fused plugins (bias_act, upfirdn2d) are built by their own `custom_ops` on first use;
whether they loaded or the run fell back to their reference ops is recorded (on CPU: their reference ops).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import math
import os
import subprocess
import sys
import time
import types
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..devices import choose_device
from ..errors import ConfigError, DermsynthError
from ..gan.augment import MODES
from ..gan.networks import Generator
from ..gan.ops import fused
from ..gan.training import ResumableBatches
from .gan import CYCLE, GAN_TRAIN_VARIANTS, _trainer, time_training

PEER_FOLDER = "bench/peers/stylegan2-ada-pytorch"
# name: num_fp16_res (their train.py trains the 4 highest resolutions in float16); the mixed one is CUDA only,
# as their networks would compute float16 on the CPU
PEER_VARIANTS = {"peer-fp32": 0, "peer-mixed": 4}
# our variant timed beside each peer variant (--compare), by device type: the fused ops beside their plugins
OURS_BESIDE = {"peer-fp32": {"cuda": "fused-fp32", "cpu": "reference-fp32"},
               "peer-mixed": {"cuda": "fused-mixed", "cpu": "reference-mixed"}}
# --quick: tiny sizes that run on the CPU in seconds (a test of the step, not a measurement)
QUICK = {"resolutions": [16], "batch": 2, "channel_base": 256, "steps": 16, "warmup": 1}
# our ADA groups (gan/augment.py's docstring) as their AugmentPipe's probability multipliers (their train.py's bgc)
AUGMENT_GROUPS = {"blit": ("xflip", "rotate90", "xint"), "geom": ("scale", "rotate", "aniso", "xfrac"),
                  "color": ("brightness", "contrast", "lumaflip", "hue", "saturation")}
PEER_MODULES = ("dnnlib", "torch_utils.misc", "torch_utils.training_stats", "torch_utils.custom_ops",
                "torch_utils.ops.bias_act",
                "torch_utils.ops.upfirdn2d", "torch_utils.ops.conv2d_gradfix", "torch_utils.ops.grid_sample_gradfix",
                "training.networks", "training.loss", "training.augment")
SPEEDUP_GOAL = 1.5  # issue 32: ours at ≥ 1.5× the peer's kimg/s at 256², batch 32


class PeerMissingError(DermsynthError):
    """The peer's source is not where `--peer` points, or its packages were already imported from elsewhere."""


# --- loading and patching their code ------------------------------------------------------------------------------
def load_peer(folder: str | Path) -> types.SimpleNamespace:
    """Import stylegan2-ada-pytorch's modules from `folder` (its checkout; inserted at the front of sys.path) and
    patch them for this PyTorch (`apply_patches`). Returns a namespace: one attribute per module of `PEER_MODULES`
    (`networks`, `loss`, `augment`, `training_stats`, `misc`, `bias_act`, `upfirdn2d`, `conv2d_gradfix`,
    `grid_sample_gradfix`, `dnnlib`), `folder`, `commit` and `patches` (the list `apply_patches` returned). Raises
    PeerMissingError when the folder holds no checkout, or one of their packages (dnnlib, torch_utils, training)
    was imported from another folder before."""
    folder = Path(folder).resolve()
    if not (folder / "training" / "networks.py").is_file():
        raise PeerMissingError(f"{folder} holds no stylegan2-ada-pytorch checkout (no training/networks.py); fetch it "
                               "with bench/fetch-peer (git-ignored, never committed: its licence is non-commercial)")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    modules = {}
    for name in PEER_MODULES:
        module = importlib.import_module(name)
        if folder not in Path(module.__file__).resolve().parents:
            raise PeerMissingError(f"{name} was imported from {module.__file__}, not from {folder}: run the peer "
                                   "benchmark in a process that has not imported another copy of it")
        modules[name.rsplit(".", 1)[-1]] = module
    peer = types.SimpleNamespace(**modules, folder=folder, commit=peer_commit(folder))
    peer.patches = apply_patches(peer)
    return peer


def peer_commit(folder: Path) -> str:
    """The peer checkout's commit: from `<folder>.commit` (written by bench/fetch-peer), else `git rev-parse`, else
    'unknown'."""
    recorded = folder.with_name(folder.name + ".commit")
    if recorded.is_file():
        return recorded.read_text().strip()
    try:
        return subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _grid_sampler_2d_backward(grad_output, input, grid, interpolation_mode, padding_mode, align_corners):
    """aten::grid_sampler_2d_backward as torch ≤ 1.9 called it: (grad_input, grad_grid). Since torch 1.10 the op
    takes `output_mask` (which of the two to compute); the old op computed both, so both are asked for."""
    return torch.ops.aten.grid_sampler_2d_backward(grad_output, input, grid, interpolation_mode, padding_mode,
                                                   align_corners, [True, True])


def _convolution_backward_weight(transposed: bool):
    """aten::cudnn_convolution[_transpose]_backward_weight as torch ≤ 1.10 called it: (weight_size, grad_output,
    input, padding, stride, dilation, groups, benchmark, deterministic, allow_tf32) → the weight's gradient. The
    op left aten in torch 1.11; `aten::convolution_backward` computes the same gradient (on CUDA through cuDNN,
    which reads benchmark/deterministic/TF32 from torch.backends.cudnn — where their code takes the flags from)."""

    def op(weight_size, grad_output, input, padding, stride, dilation, groups, benchmark, deterministic, allow_tf32):
        output_padding = [0, 0]
        if transposed:  # the output padding the forward pass must have had, from the shapes
            k = weight_size[2:]
            output_padding = [grad_output.shape[2 + i] - ((input.shape[2 + i] - 1) * stride[i] - 2 * padding[i]
                                                          + dilation[i] * (k[i] - 1) + 1) for i in range(2)]
        weight = input.new_empty(weight_size)  # only its shape, dtype and device are read
        return torch.ops.aten.convolution_backward(grad_output, input, weight, None, list(stride), list(padding),
                                                   list(dilation), transposed, output_padding, groups,
                                                   [False, True, False])[1]

    return op


OLD_JIT_OPERATIONS = {"aten::grid_sampler_2d_backward": _grid_sampler_2d_backward,
                      "aten::cudnn_convolution_backward_weight": _convolution_backward_weight(False),
                      "aten::cudnn_convolution_transpose_backward_weight": _convolution_backward_weight(True)}


class _OldTorchC:
    """`torch._C` as their gradfix modules see it: `_jit_get_operation(name)` returns the operator with the calling
    convention of torch ≤ 1.9 (`OLD_JIT_OPERATIONS`; today's returns a tuple (operator, overload names), and two of
    their operators are gone); every other attribute is torch._C's own."""

    @staticmethod
    def _jit_get_operation(name):
        return OLD_JIT_OPERATIONS[name]

    def __getattr__(self, name):
        return getattr(torch._C, name)


class _TorchAsTheyExpectIt:
    """`torch` as one of their gradfix modules sees it (bound to the module's global name `torch`): the real torch,
    but `__version__` starts with '1.9' — their custom autograd ops switch themselves off with a warning on any
    other version — and `_C` is `_OldTorchC`, which supplies the old operators those ops call."""

    _C = _OldTorchC()

    def __init__(self):
        self.__version__ = f"1.9-compatible (torch {torch.__version__} through dermsynth.bench.peer)"

    def __getattr__(self, name):
        return getattr(torch, name)


def _with_our_toolkit(get_plugin):
    """Their `custom_ops.get_plugin`, (1) building with the CUDA toolkit our fused kernels build with
    (`gan.ops.fused.toolkit`: its nvcc and headers, the extra include folders of a pip-wheel toolkit, and a
    libcudart.so link where the wheels ship only the versioned library; unchanged when none is found), and (2)
    registering the module `cpp_extension.load` built in sys.modules, where their get_plugin imports it by name
    (PyTorch's loader once did that itself; today's returns the module only, and pybind11 3 modules, initialised
    in phases, do not add themselves)."""
    if getattr(get_plugin, "with_our_toolkit", False):
        return get_plugin

    def build(module_name, sources, **build_kwargs):
        # deferred: torch.utils.cpp_extension — only a plugin build needs it (it looks for a toolkit when imported)
        from torch.utils import cpp_extension
        home, includes = fused.toolkit()
        if home is not None:
            if torch.cuda.is_available():  # only the GPU in hand, as our build does: a shorter compile
                os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "{}.{}".format(*torch.cuda.get_device_capability()))
            build_kwargs = {**build_kwargs, "extra_include_paths": [str(d) for d in includes],
                            "extra_ldflags": fused._cudart_link_flags(home, fused.cache_dir() / "peer-plugins")}
        found, load = cpp_extension.CUDA_HOME, cpp_extension.load

        def load_and_register(*args, **kwargs):
            module = load(*args, **kwargs)
            sys.modules[kwargs["name"] if "name" in kwargs else args[0]] = module
            return module

        cpp_extension.CUDA_HOME = str(home) if home is not None else found  # read when the ninja file is written
        cpp_extension.load = load_and_register
        try:
            return get_plugin(module_name, sources, **build_kwargs)
        finally:
            cpp_extension.CUDA_HOME, cpp_extension.load = found, load

    build.with_our_toolkit, build.original = True, get_plugin
    return build


def apply_patches(peer: types.SimpleNamespace) -> list[dict]:
    """Make their code run as intended on today's PyTorch, in their module namespaces (their files stay as fetched);
    idempotent. Returns one {'module', 'what', 'why'} per patch, for the JSON's `peer_patches`."""
    peer.custom_ops.get_plugin = _with_our_toolkit(peer.custom_ops.get_plugin)
    patches = [{
        "module": "torch_utils.custom_ops",
        "what": "get_plugin: the module torch.utils.cpp_extension.load builds is put in sys.modules under its name",
        "why": "their get_plugin ignores load's return value and imports the plugin by name; today's loader "
               "runs the module without a sys.modules entry and pybind11 3's multi-phase initialisation makes none, "
               "so without this their bias_act and upfirdn2d plugins never load (a warning, then their slow "
               "reference ops: our fused kernels would be compared with their reference path)"}, {
        "module": "torch_utils.custom_ops",
        "what": "get_plugin builds with the CUDA toolkit our fused kernels use (gan.ops.fused.toolkit: CUDA_HOME, a "
                "pip-wheel toolkit's include folders, a libcudart.so link), for this GPU's architecture only",
        "why": "their build takes PyTorch's default toolkit; where that is NVIDIA's pip wheels (headers in several "
               "folders, only libcudart.so.13) it cannot compile or link"}]
    for name in ("grid_sample_gradfix", "conv2d_gradfix"):
        module = getattr(peer, name)
        if not isinstance(module.torch, _TorchAsTheyExpectIt):
            module.torch = _TorchAsTheyExpectIt()
    patches.append({
        "module": "torch_utils.ops.grid_sample_gradfix",
        "what": "the module's `torch` reports a 1.9 version and its `_C._jit_get_operation('aten::grid_sampler_2d_"
                "backward')` returns that operator with the old calling convention (torch.ops.aten's, with "
                "output_mask [True, True])",
        "why": "their training loop enables their twice-differentiable grid_sample (R1 through ADA's geometric "
               "augmentation differentiates its backward); outside torch 1.7–1.9 it switches itself off with a "
               "warning and falls back to F.grid_sample, whose backward only recent PyTorch differentiates again "
               "(2.11 on CUDA raised 'derivative for aten::grid_sampler_2d_backward is not implemented'); and "
               "_jit_get_operation now returns a tuple (op, overload names)"})
    patches.append({
        "module": "torch_utils.ops.conv2d_gradfix",
        "what": "the same `torch` shim: the custom conv2d op stays on (CUDA only, as their check says), and "
                "`aten::cudnn_convolution[_transpose]_backward_weight` (gone since torch 1.11) is computed by "
                "aten::convolution_backward with output_mask [False, True, False]",
        "why": "their training loop enables conv2d_gradfix for speed: no weight gradients in R1's and path length's "
               "inner gradient (no_weight_gradients); outside torch 1.7–1.9 it would fall back to F.conv2d with a "
               "warning, and the operator it calls no longer exists"})
    return patches


# --- their training iteration -------------------------------------------------------------------------------------
def backend_flags() -> dict:
    """The PyTorch backend settings that change convolution and matrix-product speed, as now in effect."""
    return {"cudnn_benchmark": torch.backends.cudnn.benchmark, "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}


@contextmanager
def their_backend_flags():
    """Their training loop's backend settings (training_loop defaults: cudnn_benchmark=True, allow_tf32=False)
    while the peer runs; the previous ones after."""
    before = backend_flags()
    with warnings.catch_warnings():  # newer PyTorch announces another API for the TF32 switches
        warnings.simplefilter("ignore")
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.backends.cudnn.benchmark = before["cudnn_benchmark"]
            torch.backends.cudnn.allow_tf32 = before["cudnn_allow_tf32"]
            torch.backends.cuda.matmul.allow_tf32 = before["matmul_allow_tf32"]


def our_network_kwargs(options) -> dict:
    """The keyword arguments our Generator was built with: its keyword defaults, then `options.network`'s keys (as
    `gan.training.build_networks` passes them)."""
    defaults = {name: p.default for name, p in inspect.signature(Generator.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    return {**defaults, **options.network}


def peer_config(options, ours: dict) -> dict:
    """Their training_loop's keyword arguments (G_kwargs, D_kwargs, G/D_opt_kwargs, loss_kwargs, augment_kwargs and
    the loop's own), set to our run's values: `options` our `TrainingOptions`, `ours` what our built trainer holds
    (`our_settings`: the network constants that are keyword defaults of our classes, not settings)."""
    net = our_network_kwargs(options)
    blocks = {"conv_clamp": ours["conv_clamp"], "fp16_channels_last": True}  # ours: channels_last in float16
    opt = {"class_name": "torch.optim.Adam", "betas": list(options.betas), "eps": ours["adam_eps"]}
    return {
        "G_kwargs": {"z_dim": net["z_dim"], "w_dim": net["w_dim"],
                     "mapping_kwargs": {"num_layers": net["mapping_layers"], "lr_multiplier": net["mapping_lr_multiplier"],
                                        "w_avg_beta": ours["w_avg_beta"]},
                     "synthesis_kwargs": {"channel_base": net["channel_base"], "channel_max": net["channel_max"],
                                          "num_fp16_res": net["num_fp16_res"], **blocks}},
        "D_kwargs": {"architecture": "resnet", "channel_base": net["channel_base"], "channel_max": net["channel_max"],
                     "num_fp16_res": net["num_fp16_res"], "conv_clamp": ours["conv_clamp"],
                     "block_kwargs": {"fp16_channels_last": True},
                     "epilogue_kwargs": {"mbstd_group_size": ours["mbstd_group_size"],
                                         "mbstd_num_channels": ours["mbstd_num_channels"]}},
        "G_opt_kwargs": {**opt, "lr": options.g_lr}, "D_opt_kwargs": {**opt, "lr": options.d_lr},
        "loss_kwargs": {"style_mixing_prob": options.style_mixing_prob, "r1_gamma": options.r1_gamma,
                        "pl_batch_shrink": options.pl_batch_shrink, "pl_decay": options.pl_decay,
                        "pl_weight": options.pl_weight},
        "augment_kwargs": {name: 1 for group in ours["augment_groups"] for name in AUGMENT_GROUPS[group]},
        "loop": {"random_seed": options.seed, "batch_size": options.batch, "batch_gpu": options.batch,
                 "ema_kimg": options.ema_kimg, "ema_rampup": options.ema_rampup, "G_reg_interval": options.pl_interval,
                 "D_reg_interval": options.r1_interval, "augment_p": options.augment_p,
                 "ada_target": options.ada_target, "ada_interval": options.ada_interval, "ada_kimg": options.ada_kimg,
                 "xflip": options.mirror},
    }


class PeerTrainer:
    """Their networks, loss, augmentation and optimisers, stepped as their training loop steps them (module
    docstring), on `images` uint8 (N, 3, R, R) on the CPU. `config`: `peer_config`'s dict. `phase_counts` counts
    the phases run; `step()` returns nothing (their loop reads its statistics back only at ticks)."""

    def __init__(self, peer: types.SimpleNamespace, config: dict, images: torch.Tensor, device: torch.device):
        loop = config["loop"]
        self.peer, self.config, self.loop, self.device, self.images = peer, config, loop, device, images
        peer.conv2d_gradfix.enabled = True  # as their training loop sets them
        peer.grid_sample_gradfix.enabled = True
        np.random.seed(loop["random_seed"])
        torch.manual_seed(loop["random_seed"])
        common = {"c_dim": 0, "img_resolution": images.shape[-1], "img_channels": images.shape[1]}
        self.G = peer.networks.Generator(**config["G_kwargs"], **common).train().requires_grad_(False).to(device)
        self.D = peer.networks.Discriminator(**config["D_kwargs"], **common).train().requires_grad_(False).to(device)
        self.G_ema = copy.deepcopy(self.G).eval()
        self.augment_pipe = peer.augment.AugmentPipe(**config["augment_kwargs"]).train().requires_grad_(False).to(device)
        self.augment_pipe.p.copy_(torch.as_tensor(loop["augment_p"]))
        self.ada_stats = (peer.training_stats.Collector(regex="Loss/signs/real")
                          if loop["ada_target"] is not None else None)
        self.loss = peer.loss.StyleGAN2Loss(device=device, G_mapping=self.G.mapping, G_synthesis=self.G.synthesis,
                                            D=self.D, augment_pipe=self.augment_pipe, **config["loss_kwargs"])
        self.phases = []
        for name, module, opt_kwargs, interval in (("G", self.G, config["G_opt_kwargs"], loop["G_reg_interval"]),
                                                   ("D", self.D, config["D_opt_kwargs"], loop["D_reg_interval"])):
            ratio = interval / (interval + 1)  # lazy regularisation (their loop's mb_ratio)
            kwargs = {**opt_kwargs, "lr": opt_kwargs["lr"] * ratio, "betas": [b ** ratio for b in opt_kwargs["betas"]]}
            opt = peer.dnnlib.util.construct_class_by_name(module.parameters(), **kwargs)
            self.phases += [(name + "main", module, opt, 1), (name + "reg", module, opt, interval)]
        self.phase_counts = {name: 0 for name, *_ in self.phases}
        self.batches = ResumableBatches(len(images), loop["batch_size"], loop["random_seed"])
        self.batch_idx, self.cur_nimg = 0, 0

    def _real_batch(self) -> torch.Tensor:
        real = self.images[self.batches.next()]
        if self.loop["xflip"]:  # random x-flips of real images, like ours (their Dataset(xflip=True) stores both)
            real = torch.where(torch.rand(len(real))[:, None, None, None] < 0.5, real.flip(-1), real)
        return real.to(self.device).to(torch.float32) / 127.5 - 1

    def step(self) -> None:
        """One iteration: the four phases (each when batch_idx is a multiple of its interval), G_ema, ADA."""
        batch, z_dim, device = self.loop["batch_size"], self.G.z_dim, self.device
        real_img = self._real_batch()
        real_c = torch.zeros([batch, 0], device=device)
        all_gen_z = torch.randn([len(self.phases) * batch, z_dim], device=device).split(batch)
        all_gen_c = torch.zeros([len(self.phases) * batch, 0], device=device).split(batch)  # unconditional
        for (name, module, opt, interval), gen_z, gen_c in zip(self.phases, all_gen_z, all_gen_c):
            if self.batch_idx % interval != 0:
                continue
            opt.zero_grad(set_to_none=True)
            module.requires_grad_(True)
            self.loss.accumulate_gradients(phase=name, real_img=real_img, real_c=real_c, gen_z=gen_z, gen_c=gen_c,
                                           sync=True, gain=interval)
            module.requires_grad_(False)
            for param in module.parameters():
                if param.grad is not None:
                    self.peer.misc.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5, out=param.grad)
            opt.step()
            self.phase_counts[name] += 1
        self._update_ema()
        self.cur_nimg += batch
        self.batch_idx += 1
        if self.ada_stats is not None and self.batch_idx % self.loop["ada_interval"] == 0:
            self._adjust_p()

    def _update_ema(self) -> None:
        loop = self.loop
        ema_nimg = loop["ema_kimg"] * 1000
        if loop["ema_rampup"] is not None:
            ema_nimg = min(ema_nimg, self.cur_nimg * loop["ema_rampup"])
        ema_beta = 0.5 ** (loop["batch_size"] / max(ema_nimg, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.copy_(p.lerp(p_ema, ema_beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    def _adjust_p(self) -> None:
        loop = self.loop
        self.ada_stats.update()
        adjust = (np.sign(self.ada_stats["Loss/signs/real"] - loop["ada_target"])
                  * (loop["batch_size"] * loop["ada_interval"]) / (loop["ada_kimg"] * 1000))
        zero = self.peer.misc.constant(0, device=self.device)
        self.augment_pipe.p.copy_((self.augment_pipe.p + adjust).max(zero))

    def plugins(self) -> dict:
        """Which implementation of their fused ops ran: 'cuda plugin' when it was built and loaded, else
        'reference' (on CPU always; on CUDA when the build failed — their ops then warn and fall back)."""
        cuda = self.device.type == "cuda"
        return {name: "cuda plugin" if getattr(self.peer, name)._plugin is not None else
                ("reference (the plugin did not load)" if cuda else "reference (CPU)")
                for name in ("bias_act", "upfirdn2d")}


# --- the settings side by side ------------------------------------------------------------------------------------
def _resolutions_down(resolution: int) -> list[int]:
    return [2 ** i for i in range(int(math.log2(resolution)), 2, -1)]


def our_settings(trainer) -> dict:
    """What our built `GanTrainer` holds, by the keys of `SETTINGS`, read from its networks, optimisers, ADA pipeline
    and options."""
    o, G, D = trainer.options, trainer.G, trainer.D
    d_res = _resolutions_down(G.img_resolution)
    settings = {
        "resolution": G.img_resolution, "batch": o.batch, "z_dim": G.z_dim, "w_dim": G.w_dim,
        "mapping_layers": len(G.mapping.layers), "mapping_lr_multiplier": G.mapping.layers[0].bias_gain,
        "w_avg_beta": G.mapping.w_avg_beta, "num_ws": G.num_ws,
        "G_channels": {b.resolution: b.conv1.weight.shape[0] for b in G.synthesis.blocks},
        "D_channels": {r: b.conv0.weight.shape[0] for r, b in zip(d_res, D.blocks)},
        "G_parameters": sum(p.numel() for p in G.parameters()), "D_parameters": sum(p.numel() for p in D.parameters()),
        "G_architecture": "skip", "D_architecture": "resnet",  # the only ones gan/networks.py builds
        "conv_clamp": G.synthesis.blocks[-1].conv1.conv_clamp,
        "G_fp16_resolutions": [b.resolution for b in G.synthesis.blocks if b.reduced_precision],
        "D_fp16_resolutions": [r for r, b in zip(d_res, D.blocks) if b.reduced_precision],
        "reduced_dtype": our_network_kwargs(o)["reduced_precision"],
        "mbstd_group_size": D.mbstd.group_size, "mbstd_num_channels": D.mbstd.num_channels,
        "augment_groups": [g for g in AUGMENT_GROUPS if g in MODES[trainer.augment.mode]],
        "augment_p_start": o.augment_p, "ada_target": o.ada_target, "ada_interval": o.ada_interval,
        "ada_kimg": o.ada_kimg, "r1_gamma": o.r1_gamma, "r1_interval": o.r1_interval, "pl_weight": o.pl_weight,
        "pl_interval": o.pl_interval, "pl_batch_shrink": o.pl_batch_shrink, "pl_decay": o.pl_decay,
        "style_mixing_prob": o.style_mixing_prob, "ema_kimg": o.ema_kimg, "ema_rampup": o.ema_rampup,
        "mirror": o.mirror, "adam_eps": trainer.opt_G.param_groups[0]["eps"], "conditional": G.c_dim > 0,
    }
    settings["augment_transformations"] = [n for g in settings["augment_groups"] for n in AUGMENT_GROUPS[g]]
    for net, opt in (("G", trainer.opt_G), ("D", trainer.opt_D)):
        group = opt.param_groups[0]
        settings.update({f"{net}_lr": group["lr"], f"{net}_betas": list(group["betas"]), f"{net}_eps": group["eps"]})
    return settings


def peer_settings(peer: PeerTrainer) -> dict:
    """What the peer's built objects hold, by the keys of `SETTINGS` (read back from their modules, not from the
    configuration they were given)."""
    G, D, loss, loop, pipe = peer.G, peer.D, peer.loss, peer.loop, peer.augment_pipe
    g_blocks = {r: getattr(G.synthesis, f"b{r}") for r in G.synthesis.block_resolutions}
    d_blocks = {r: getattr(D, f"b{r}") for r in D.block_resolutions}
    top = g_blocks[G.img_resolution]
    transformations = [n for names in AUGMENT_GROUPS.values() for n in names if getattr(pipe, n) > 0]
    settings = {
        "resolution": G.img_resolution, "batch": loop["batch_size"], "z_dim": G.z_dim, "w_dim": G.w_dim,
        "mapping_layers": G.mapping.num_layers, "mapping_lr_multiplier": G.mapping.fc0.bias_gain,
        "w_avg_beta": G.mapping.w_avg_beta, "num_ws": G.num_ws,
        "G_channels": {r: b.conv1.weight.shape[0] for r, b in g_blocks.items()},
        "D_channels": {r: b.conv0.weight.shape[0] for r, b in d_blocks.items()},
        "G_parameters": sum(p.numel() for p in G.parameters()), "D_parameters": sum(p.numel() for p in D.parameters()),
        "G_architecture": top.architecture, "D_architecture": d_blocks[D.img_resolution].architecture,
        "conv_clamp": top.conv1.conv_clamp,
        "G_fp16_resolutions": [r for r, b in g_blocks.items() if b.use_fp16],
        "D_fp16_resolutions": [r for r, b in d_blocks.items() if b.use_fp16],
        "reduced_dtype": "float16",  # their networks' only reduced precision
        "mbstd_group_size": D.b4.mbstd.group_size, "mbstd_num_channels": D.b4.mbstd.num_channels,
        "augment_groups": [g for g, names in AUGMENT_GROUPS.items() if all(getattr(pipe, n) > 0 for n in names)],
        "augment_transformations": transformations, "augment_p_start": loop["augment_p"],
        "ada_target": loop["ada_target"], "ada_interval": loop["ada_interval"], "ada_kimg": loop["ada_kimg"],
        "r1_gamma": loss.r1_gamma, "r1_interval": loop["D_reg_interval"], "pl_weight": loss.pl_weight,
        "pl_interval": loop["G_reg_interval"], "pl_batch_shrink": loss.pl_batch_shrink, "pl_decay": loss.pl_decay,
        "style_mixing_prob": loss.style_mixing_prob, "ema_kimg": loop["ema_kimg"], "ema_rampup": loop["ema_rampup"],
        "mirror": loop["xflip"], "conditional": G.c_dim > 0,
    }
    for net, (_, _, opt, _) in (("G", peer.phases[0]), ("D", peer.phases[2])):
        group = opt.param_groups[0]
        settings.update({f"{net}_lr": group["lr"], f"{net}_betas": list(group["betas"]), f"{net}_eps": group["eps"]})
    return settings


# key: (what it is, note); every one of them is meant to be equal
SETTINGS = {
    "resolution": ("image side (px)", ""), "batch": ("minibatch (one process)", ""),
    "conditional": ("conditional (labels)", "both unconditional here"),
    "z_dim": ("z dimensions", ""), "w_dim": ("w dimensions", ""),
    "mapping_layers": ("mapping layers", "paper256's 8 (their 'auto' config would use 2)"),
    "mapping_lr_multiplier": ("mapping learning-rate multiplier", ""),
    "w_avg_beta": ("w_avg EMA decay", ""), "num_ws": ("styles (num_ws)", ""),
    "G_channels": ("G channels by resolution", "min(channel_base / res, channel_max)"),
    "D_channels": ("D channels by resolution", ""),
    "G_parameters": ("G parameters", "same architecture: same count"),
    "D_parameters": ("D parameters", ""),
    "G_architecture": ("G architecture", ""), "D_architecture": ("D architecture", ""),
    "conv_clamp": ("activation clamp", ""),
    "G_fp16_resolutions": ("G float16 resolutions", "num_fp16_res; float16 only on CUDA in ours, always in theirs"),
    "D_fp16_resolutions": ("D float16 resolutions", ""),
    "reduced_dtype": ("reduced precision", "theirs has float16 only; channels_last in reduced blocks in both "
                      "(their fp16_channels_last, train.py --nhwc)"),
    "mbstd_group_size": ("minibatch-std group", "ours 4 (MBSTD_GROUP_SIZE); paper256 uses 8 at 8 per GPU"),
    "mbstd_num_channels": ("minibatch-std channels", ""),
    "G_lr": ("G Adam lr (× 4/5, lazy regularisation)", ""), "G_betas": ("G Adam betas (^ 4/5)", ""),
    "G_eps": ("G Adam eps", ""),
    "D_lr": ("D Adam lr (× 16/17)", ""), "D_betas": ("D Adam betas (^ 16/17)", ""), "D_eps": ("D Adam eps", ""),
    "r1_gamma": ("R1 γ", "paper256's 1"), "r1_interval": ("R1 every (steps)", ""),
    "pl_weight": ("path-length weight", ""), "pl_interval": ("path length every (steps)", ""),
    "pl_batch_shrink": ("path-length batch ÷", ""), "pl_decay": ("path-length mean decay", ""),
    "style_mixing_prob": ("style mixing probability", ""),
    "ema_kimg": ("G_ema half-life (kimg)", "paper256 uses 20 at batch 64; ours 10 (schema)"),
    "ema_rampup": ("G_ema ramp-up", ""),
    "augment_groups": ("ADA pipeline", "bgc"), "augment_transformations": ("ADA transformations", ""),
    "augment_p_start": ("augment p at the start", ""), "ada_target": ("ADA target r_t", ""),
    "ada_interval": ("ADA p adjusted every (steps)", ""), "ada_kimg": ("ADA speed (kimg for Δp = 1)", ""),
    "mirror": ("real x-flips", "ours: on the device each step; the peer's: on the host in this driver (their "
               "Dataset(xflip=True) doubles the set)"),
}
# What cannot be equal: the implementations differ (recorded in every row's `differences`)
DIFFERENCES = [
    "ADA geometric resampling: theirs pads (reflect), upsamples 2× with a wavelet filter, grid-samples and "
    "downsamples; ours grid-samples once with reflection padding (gan/augment.py)",
    "ops: ours cuda_ops 'require' (our fused kernels) on CUDA, reference on CPU; theirs: their bias_act/upfirdn2d "
    "plugins on CUDA when they build (see `ops`), reference on CPU",
    "R1/path-length inner gradients: theirs through conv2d_gradfix with no_weight_gradients (CUDA); ours through "
    "PyTorch's own double backward",
    "backend flags: their loop's cudnn.benchmark on and TF32 off, ours timed under the same (`backend_flags`); "
    "`dermsynth gan train` itself runs with PyTorch's defaults (cuDNN TF32 on)",
    "host synchronisations: ours reads nothing back in the step (statistics stay on the device until a tick); "
    "theirs reads ADA's statistics back every 4 steps (training_stats.Collector.update) and copies the real batch "
    "synchronously, as their loop does",
    "optimiser and EMA: ours fused Adam on CUDA (foreach on the CPU) and one _foreach_lerp_; theirs torch.optim.Adam "
    "with PyTorch's default implementation and a lerp per parameter",
    "data: both take the same in-memory uint8 batches; their DataLoader (worker processes, pinned memory) is not run",
]


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def settings_table(ours: dict, peer: dict) -> list[dict]:
    """One row per setting of `SETTINGS`: {'setting', 'key', 'ours', 'peer', 'equal', 'note'} (floats equal to
    1e-9 relative; dict keys as strings, for JSON)."""
    def shown(value):
        return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value
    return [{"setting": label, "key": key, "ours": shown(ours[key]), "peer": shown(peer[key]),
             "equal": _same(ours[key], peer[key]), "note": note} for key, (label, note) in SETTINGS.items()]


# --- the benchmark ------------------------------------------------------------------------------------------------
def _fingerprints(module: torch.nn.Module) -> torch.Tensor:
    """One float64 per parameter tensor (its sum of absolute values), on the CPU: enough to see which changed."""
    with torch.no_grad():
        return torch.stack([p.detach().double().abs().sum() for p in module.parameters()]).cpu()


def _changed(before: torch.Tensor, module: torch.nn.Module) -> list[int]:
    return [int((_fingerprints(module) != before).sum()), len(before)]


def expected_phase_counts(steps: int, pl_interval: int, r1_interval: int) -> dict:
    """How often each phase runs in `steps` iterations counted from 0 (a phase runs when the index is a multiple of
    its interval)."""
    return {"Gmain": steps, "Greg": math.ceil(steps / pl_interval), "Dmain": steps,
            "Dreg": math.ceil(steps / r1_interval)}


def _variants(args, device: torch.device) -> list[str]:
    default = list(PEER_VARIANTS) if device.type == "cuda" else ["peer-fp32"]
    names = default if not args.variants else args.variants
    unknown = [n for n in names if n not in PEER_VARIANTS]
    if unknown:
        raise ConfigError(f"gan-peer: unknown variant(s) {', '.join(unknown)}; choose from {', '.join(PEER_VARIANTS)}")
    if device.type != "cuda" and any(PEER_VARIANTS[n] for n in names):
        raise ConfigError("gan-peer: peer-mixed runs on CUDA only (their networks would compute float16 on the CPU); "
                          "use --variants peer-fp32 or --device cuda")
    return names


def _timed_row(timed: dict) -> dict:
    return {"steps": timed["steps"], "warmup_seconds": round(timed["warmup_seconds"], 2),
            "seconds": round(timed["seconds"], 3), "sec_per_kimg": round(timed["sec_per_kimg"], 3),
            "peak_memory_gb": None if timed["peak_memory_gb"] is None else round(timed["peak_memory_gb"], 2)}


def _build_plugins(peer: types.SimpleNamespace, device: torch.device) -> dict:
    """On CUDA, build (or load) their bias_act and upfirdn2d plugins now, timed, with any warning their fallback
    gave; on CPU nothing (their ops take the reference path there)."""
    if device.type != "cuda":
        return {"plugin_build_seconds": None, "plugin_warnings": []}
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peer.bias_act._init()
        peer.upfirdn2d._init()
    return {"plugin_build_seconds": round(time.perf_counter() - start, 1),
            "plugin_warnings": [str(w.message)[:2000] for w in caught]}


def _run_peer(peer, config: dict, images, device, args) -> dict:
    """Build the peer with `config`, time it (`time_training`) and return its row's fields."""
    with their_backend_flags(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # once per place: a warning in the step must not slow the clock
        flags = backend_flags()
        plugins = _build_plugins(peer, device)
        trainer = PeerTrainer(peer, config, images, device)
        before = {name: _fingerprints(getattr(trainer, name)) for name in ("G", "D")}
        timed = time_training(trainer, args.warmup, args.steps, args.batch, device)
    messages = sorted({str(w.message).splitlines()[0][:300] for w in caught})
    total = args.warmup + timed["steps"]
    return {"trainer": trainer, "timed": timed, "fields": {
        **_timed_row(timed), "ops": trainer.plugins(), **plugins, "backend_flags": flags,
        "conv2d_gradfix": "custom op (their no_weight_gradients path)" if device.type == "cuda"
        else "F.conv2d (their custom op is CUDA only)",
        "grid_sample_gradfix": "custom op (twice differentiable)"
        if peer.grid_sample_gradfix._should_use_custom_op() else "F.grid_sample (R1 through ADA cannot run)",
        "phase_counts": dict(trainer.phase_counts),
        "expected_phase_counts": expected_phase_counts(total, config["loop"]["G_reg_interval"],
                                                       config["loop"]["D_reg_interval"]),
        "weights_changed": {name: _changed(before[name], getattr(trainer, name)) for name in ("G", "D")},
        "augment_p_end": round(float(trainer.augment_pipe.p), 6), "pl_mean_end": float(trainer.loss.pl_mean),
        "peer_warnings": messages[:10]}}


def _run_ours(args, variant: str, images, device) -> tuple[object, dict | None]:
    """Build our trainer for `variant` and, with `--compare`, time it under the peer's backend settings
    (`their_backend_flags`): (trainer, {'timed', 'fields'} or None)."""
    cuda_ops, num_fp16_res, compiled = GAN_TRAIN_VARIANTS[variant]
    trainer = _trainer(args, cuda_ops, num_fp16_res, compiled, images, device)
    if not args.compare:
        return trainer, None
    with their_backend_flags():  # the same cuDNN autotuning and no TF32 on both sides: a like-for-like ratio
        flags = backend_flags()
        timed = time_training(trainer, args.warmup, args.steps, args.batch, device)
    return trainer, {"timed": timed, "fields": {**_timed_row(timed), "backend_flags": flags,
                                                "augment_p_end": round(float(trainer.augment.p), 6)}}


def _apply_quick(args) -> None:
    for key, value in QUICK.items():
        setattr(args, key, value)


def bench_gan_peer(args) -> list[dict]:
    """sec/kimg and peak memory of NVIDIA's stylegan2-ada-pytorch (from `args.peer`) trained like ours (module
    docstring), per variant (`--variants`: peer-fp32, peer-mixed; default both on CUDA, peer-fp32 on CPU), timed by
    `bench.gan.time_training`. Each 'gan_peer' row holds the settings side by side (`settings`: ours read from our
    built trainer, theirs read back from their built objects), the configuration given to their classes
    (`peer_config`), the run-time patches (`peer_patches`), which of their ops ran (`ops`), the phases counted and
    which weights changed. With `--compare`, our matching variant (`OURS_BESIDE`) is timed first in the same process
    and a 'gan_peer_vs_ours' row gives the ratio (`ours_speedup` = peer's sec/kimg ÷ ours). `--quick`: the tiny
    sizes of `QUICK`. Raises PeerMissingError when `args.peer` holds no checkout, ConfigError for an unknown or
    CPU-impossible variant."""
    if args.quick:
        _apply_quick(args)
    device = choose_device(args.device)
    names = _variants(args, device)
    peer = load_peer(args.peer)
    resolution = args.resolutions[0]
    images = torch.randint(0, 256, (args.batch * 4, 3, resolution, resolution), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))  # as bench_gan_train's
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = []
    for name in names:
        ours_variant = OURS_BESIDE[name][device.type]
        base = {"variant": name, "device": device_name, "resolution": resolution, "batch": args.batch,
                "channel_base": args.channel_base, "timed_steps_rounded_to": CYCLE, "warmup": args.warmup}
        ours, ours_run = _run_ours(args, ours_variant, images, device)
        ours_values = our_settings(ours)
        config = peer_config(ours.options, ours_values)
        del ours
        if device.type == "cuda":
            torch.cuda.empty_cache()
        run = _run_peer(peer, config, images, device, args)
        table = settings_table(ours_values, peer_settings(run["trainer"]))
        rows.append({"what": "gan_peer", **base, "status": "ok", "peer": str(peer.folder), "peer_commit": peer.commit,
                     **run["fields"], "ours_variant": ours_variant, "settings": table,
                     "settings_differing": [r["key"] for r in table if not r["equal"]], "differences": DIFFERENCES,
                     "peer_config": config, "peer_patches": peer.patches})
        print({k: v for k, v in rows[-1].items() if k not in ("settings", "peer_config", "peer_patches",
                                                               "differences")}, flush=True)
        if ours_run:
            ours_fields = ours_run["fields"]
            rows.append({"what": "gan_peer_vs_ours", **base, "ours_variant": ours_variant, "ours": ours_fields,
                         "peer_sec_per_kimg": run["fields"]["sec_per_kimg"],
                         "ours_sec_per_kimg": ours_fields["sec_per_kimg"],
                         "ours_speedup": round(run["timed"]["sec_per_kimg"] / ours_run["timed"]["sec_per_kimg"], 3),
                         "goal_speedup": SPEEDUP_GOAL, "peak_memory_gb": {"ours": ours_fields["peak_memory_gb"],
                                                                          "peer": run["fields"]["peak_memory_gb"]}})
            print(rows[-1], flush=True)
        del run
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows
