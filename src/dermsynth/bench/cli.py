"""`dermsynth` verbs of the bench stage: their flags and what each runs (cli.py assembles them)."""

from __future__ import annotations

from ..verbs import add_verb


def _bench(args) -> None:
    if args.what == "gan-profile":
        # deferred: torch — `dermsynth --help` and the other verbs must not load the benchmarks
        from .profile import run_profile
        return run_profile(args)
    if args.what == "gan-graph-breaks":
        # deferred: torch — `dermsynth --help` and the other verbs must not load the benchmarks
        from .graph_breaks import run_graph_breaks
        return run_graph_breaks(args)
    # deferred: torch — `dermsynth --help` and the other verbs must not load the benchmarks
    from .run import run_benchmark
    run_benchmark(args)


def add_verbs(sub, top) -> None:
    """Declare the bench stage's verbs on the `dermsynth` subparsers."""
    p = add_verb(top, "bench", _bench, "Benchmarks: ingest and LMDB read throughput, metric throughput, GAN training "
             "sec/kimg and FLOPs, projection, e4e/HyperStyle inversion and classifier training speed.")
    p.add_argument("what", choices=["ingest", "lmdb-read", "metrics", "gan-train", "project", "invert",
                                    "classify-train", "gan-profile", "gan-graph-breaks", "gan-peer"],
                   help="the benchmark to run (gan-peer: NVIDIA's stylegan2-ada-pytorch trained like gan-train and "
                   "timed alike, fetched by bench/fetch-peer; gan-profile: torch.profiler over one regularisation "
                   "cycle of the training step; gan-graph-breaks: torch._dynamo.explain of the compiled passes)")
    p.add_argument("--images", type=int, default=200, help="ingest, lmdb-read, metrics: how many images (source "
                   "JPEGs written to --workdir; random images for metrics)")
    p.add_argument("--resolutions", type=int, nargs="+", default=[256, 512], help="image sides in pixels, one "
                   "run each (gan-train, project, invert: the first)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="ingest, lmdb-read: process counts, "
                   "one run each")
    p.add_argument("--max-side", type=int, default=4000, help="source image size (ISIC 2020 reaches 6000)")
    p.add_argument("--workdir", default="benchmarks/bench-data", help="folder for the generated source images "
                   "and stores (kept between runs)")
    p.add_argument("--device", default="cpu", help="metrics, gan-train, project, invert, classify-train: cpu or cuda")
    p.add_argument("--batch", type=int, default=32, help="gan-train, project, invert, classify-train: minibatch")
    p.add_argument("--steps", type=int, default=32, help="timed steps (after --warmup); gan-train rounds up to "
                   "whole regularisation cycles of 16")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps run before the timed ones")
    p.add_argument("--channel-base", type=int, default=16384, help="generator width (16384 = paper256)")
    p.add_argument("--variants", nargs="*", default=None, help="gan-train: variants to run (default: all on "
                   "CUDA, reference-fp32 on CPU; none with --flops: the FLOP count alone), e.g. fused-fp32 "
                   "fused-mixed reference-mixed-compiled; gan-profile: one (default fused-fp32 on CUDA)")
    p.add_argument("--flops", action="store_true", help="gan-train: count model FLOPs per kimg (one cycle)")
    p.add_argument("--peer", default="bench/peers/stylegan2-ada-pytorch", help="gan-peer: the stylegan2-ada-pytorch "
                   "checkout (git-ignored, never committed: non-commercial licence); --variants peer-fp32 peer-mixed")
    p.add_argument("--compare", action="store_true", help="gan-peer: also time our matching gan-train variant in the "
                   "same process and record the ratio")
    p.add_argument("--quick", action="store_true", help="gan-peer: tiny sizes (16², batch 2, channel base 256, 16 "
                   "steps after 1), a test of the step")
    p.add_argument("--time-budget", type=float, default=None, help="gan-train: skip the remaining variants after "
                   "this many seconds (default: none, run all)")
    p.add_argument("--fid-samples", type=int, nargs="*", default=[2_500, 10_000],
                   help="metrics: sample counts for the FID/KID-from-features timing (none: skip it)")
    p.add_argument("--projection-steps", type=int, default=1000, help="project: steps per image (studies: 1000)")
    p.add_argument("--classifiers", nargs="+", default=["densenet169:512", "efficientnet_b2:256"],
                   help="classify-train: ARCH:RESOLUTION pairs (timm names)")
    p.add_argument("--out", default="benchmarks/data.json", help="JSON the record is merged into (one entry per "
                   "benchmark and machine); gan-profile, gan-graph-breaks: the folder for their files (a .json "
                   "path means <its folder>/<the benchmark>)")
