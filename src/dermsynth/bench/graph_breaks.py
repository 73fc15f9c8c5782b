"""Graph breaks of the passes the trainer compiles (`dermsynth bench gan-graph-breaks`; issue 32).

With `compile: true`, `GanTrainer` runs the main passes through `torch.compile`: `G.synthesis` on W and `D` on
(augmented) images and labels. Every graph break splits a compiled region in two — a return to Python, a separate
kernel launch sequence, no fusion across it — so the goal is none. `torch._dynamo.explain` traces each pass
(without compiling it) and lists the graphs and the reasons they broke; this module runs it per pass, with the
reference ops and (on CUDA, where they exist) the fused ones, and writes `graph_breaks.json`: per pass the graph
count, the break count and the reasons, deduplicated, each with the innermost line of this package it stopped at.
Runs on the CPU (the reference ops; the fused ones are recorded as unavailable there). Note that while
torch.compile traces, `fused.kernels_for` hands every op the reference path (inductor fuses it), so on CUDA the
"fused" rows trace the same code as the reference ones but for device-dependent branches.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ..devices import choose_device
from ..gan.training import build_networks
from ..locks import exclusive
from ..outputs import check_writable, write_json, write_text
from .gan import _trainer
from .profile import folder_for

LABEL_CLASSES = 7  # the conditional D is checked with HAM10000's seven diagnoses
COMPILED = ("G.synthesis(ws)", "D(images)", "D(images, labels)")  # what `compile: true` compiles today
PASSES = (*COMPILED, "G.mapping(z)", "augment(images)", "Gmain loss(z)", "Greg path lengths(ws)",
          "Dreg R1 penalty(images)")  # and what a whole-step compile would take in too


def _where(user_stack) -> str:
    """The innermost frame of this package in a break's user stack (outermost first), as path:line (function);
    the innermost frame of all when none is ours."""
    frames = list(user_stack or [])
    ours = [f for f in frames if "/dermsynth/" in f.filename]
    frame = (ours or frames or [None])[-1]
    if frame is None:
        return "unknown"
    path = frame.filename.rsplit("/dermsynth/", 1)[-1] if "/dermsynth/" in frame.filename else frame.filename
    return f"{path}:{frame.lineno} ({frame.name})"


def explain(fn, *inputs) -> dict:
    """`torch._dynamo.explain(fn)(*inputs)` as a dict: {'graphs', 'graph_breaks', 'ops', 'reasons': [{'reason',
    'where', 'count'}]} — reasons deduplicated on (first line of the reason, where), most frequent first."""
    result = torch._dynamo.explain(fn)(*inputs)
    reasons: dict[tuple[str, str], int] = {}
    for reason in result.break_reasons:
        if not getattr(reason, "graph_break", True):
            continue
        key = (str(reason.reason).strip().splitlines()[0][:300], _where(reason.user_stack))
        reasons[key] = reasons.get(key, 0) + 1
    return {"graphs": result.graph_count, "graph_breaks": result.graph_break_count, "ops": result.op_count,
            "reasons": [{"reason": r, "where": w, "count": n}
                        for (r, w), n in sorted(reasons.items(), key=lambda item: -item[1])]}


def _passes(trainer, D_labelled, z, ws, real, labels) -> dict:
    """{name: (function, inputs)}: the compiled passes, then the parts and whole losses a whole-step compile
    would take in. The losses are computed as GanTrainer._g_main, _g_reg and _d_reg compute them (without the
    backward pass and optimiser step), the regularisation inputs made leaves outside (as a compiled step would)."""
    G, D, augment = trainer.G, trainer.D, trainer.augment

    def g_main_loss(z):
        return F.softplus(-D(augment(G.synthesis(G.mapping(z, None))), None)).mean()

    def g_reg_lengths(ws):  # path length: the gradient of the noise-weighted image with respect to W
        fake = G.synthesis(ws)
        noise = torch.randn_like(fake) / math.sqrt(fake.shape[2] * fake.shape[3])
        grad, = torch.autograd.grad((fake * noise).sum(), ws, create_graph=True)
        return grad.square().sum(dim=2).mean(dim=1).sqrt()

    def d_reg_penalty(real):  # R1: the squared gradient norm of D at the real images
        grad, = torch.autograd.grad(D(augment(real), None).sum(), real, create_graph=True)
        return grad.square().sum(dim=[1, 2, 3]).mean()

    leaf_ws, leaf_real = ws.detach().requires_grad_(True), real.detach().requires_grad_(True)
    return {"G.synthesis(ws)": (G.synthesis, (ws,)), "D(images)": (D, (real, None)),
            "D(images, labels)": (D_labelled, (real, labels)), "G.mapping(z)": (G.mapping, (z, None)),
            "augment(images)": (augment, (real,)), "Gmain loss(z)": (g_main_loss, (z,)),
            "Greg path lengths(ws)": (g_reg_lengths, (leaf_ws,)), "Dreg R1 penalty(images)": (d_reg_penalty,
                                                                                            (leaf_real,))}


def graph_breaks(args) -> dict:
    """Explain the passes of `_passes` at `--resolutions` (the first), `--batch`, `--channel-base`, with the reference
    ops and, on CUDA, the fused ones. Returns {'device', 'torch', 'modules': {'<pass> (<ops> ops)': explain(...)
    plus 'compiled_by_the_trainer', or {'status': 'unavailable', 'reason'}}, 'total_graph_breaks' (in the passes
    `compile: true` compiles today: G.synthesis and D), 'whole_step_graph_breaks' (in all of them)}. A pass that
    breaks at `torch.autograd.grad` is explained again with `torch._dynamo.config.trace_autograd_ops` on
    ('with_trace_autograd_ops'), where this PyTorch has that setting."""
    device = choose_device(args.device)
    resolution = args.resolutions[0]
    images = torch.randint(0, 256, (args.batch * 2, 3, resolution, resolution), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    modules: dict[str, dict] = {}
    for ops, mode in (("reference", "reference"), ("fused", "require")):
        if ops == "fused" and device.type != "cuda":
            for name in PASSES:
                modules[f"{name} ({ops} ops)"] = {"status": "unavailable", "reason": "the fused ops need CUDA (and "
                                                  "while torch.compile traces, `fused.kernels_for` takes the "
                                                  "reference ops anyway)"}
            continue
        trainer = _trainer(args, mode, 0, False, images, device)  # sets the ops mode (fused.set_mode) for its nets
        _, D_labelled = build_networks(trainer.options, LABEL_CLASSES, resolution, device)
        with torch.no_grad():
            z = torch.randn(args.batch, trainer.G.z_dim, device=device)
            ws = trainer.G.mapping(z, None)
        real = images[:args.batch].to(device).float() / 127.5 - 1
        labels = F.one_hot(torch.arange(args.batch) % LABEL_CLASSES, LABEL_CLASSES).float().to(device)
        for name, (fn, inputs) in _passes(trainer, D_labelled, z, ws, real, labels).items():
            record = {"status": "ok", "compiled_by_the_trainer": name in COMPILED, **explain(fn, *inputs)}
            if any("autograd.grad" in r["reason"] for r in record["reasons"]) and \
                    hasattr(torch._dynamo.config, "trace_autograd_ops"):
                with torch._dynamo.config.patch(trace_autograd_ops=True):
                    record["with_trace_autograd_ops"] = explain(fn, *inputs)
            modules[f"{name} ({ops} ops)"] = record
        del trainer, D_labelled
    torch._dynamo.reset()
    return {"what": "gan_graph_breaks", "device": torch.cuda.get_device_name(device) if device.type == "cuda"
            else "cpu", "torch": torch.__version__, "resolution": resolution, "batch": args.batch,
            "channel_base": args.channel_base, "modules": modules,
            "total_graph_breaks": sum(m.get("graph_breaks", 0) for m in modules.values()
                                      if m.get("compiled_by_the_trainer")),
            "whole_step_graph_breaks": sum(m.get("graph_breaks", 0) for m in modules.values())}


def markdown(report: dict) -> str:
    """graph_breaks.md: per pass its graphs, breaks and reasons."""
    lines = [f"# Graph breaks ({report['device']}, torch {report['torch']}, {report['resolution']}², batch "
             f"{report['batch']}, channel_base {report['channel_base']}): {report['total_graph_breaks']} in the "
             f"passes `compile: true` compiles, {report['whole_step_graph_breaks']} in all the passes below",
             "",
             "| pass | graphs | breaks | reasons (count × reason — where) |", "|---|---|---|---|"]
    for name, m in report["modules"].items():
        if m["status"] != "ok":
            lines.append(f"| {name} | – | – | {m['status']}: {m['reason']} |")
            continue
        reasons = "<br>".join(f"{r['count']} × {r['reason']} — {r['where']}" for r in m["reasons"]) or "none"
        if "with_trace_autograd_ops" in m:
            again = m["with_trace_autograd_ops"]
            reasons += (f"<br>with trace_autograd_ops: {again['graphs']} graph(s), {again['graph_breaks']} "
                        "break(s)" + "".join(f"; {r['reason']} — {r['where']}" for r in again["reasons"]))
        lines.append(f"| {name} | {m['graphs']} | {m['graph_breaks']} | {reasons.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def run_graph_breaks(args) -> None:
    """`dermsynth bench gan-graph-breaks`: write graph_breaks.json and graph_breaks.md into `folder_for(args)`."""
    out: Path = check_writable(folder_for(args))
    with exclusive(out, f"bench {args.what}"):
        report = graph_breaks(args)
        write_json(out / "graph_breaks.json", report)
        write_text(out / "graph_breaks.md", markdown(report))
    print(f"wrote {out / 'graph_breaks.json'}: {report['total_graph_breaks']} graph break(s) in the compiled passes, "
          f"{report['whole_step_graph_breaks']} in all")
