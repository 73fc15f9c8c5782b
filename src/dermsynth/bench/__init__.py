"""Benchmarks (reported figures, never test assertions): `dermsynth bench WHAT`.

* ``ingest``, ``lmdb-read`` (`data`): images/s from a JPEG archive to LMDB, per resolution, worker
  processes and JPEG DCT-scaling; images/s read back through a DataLoader with N workers.
* ``metrics`` (`metrics`): images/s through each feature network, LPIPS pairs/s, FID/KID time.
* ``gan-train`` (`gan`): StyleGAN2-ADA training sec/kimg, peak memory, model FLOPs and share of the
  GPU's peak, for fused vs reference ops × fp32 vs mixed precision × eager vs compiled.
* ``project``, ``invert``, ``classify-train`` (`stages`): projection images/hour, e4e/HyperStyle
  ms/image, classifier training images/s.

`bench/gpu-check` runs the GPU-relevant ones in one prepared, time-boxed run (docs/benchmarks.md).
`run.run_benchmark` runs one and merges its record into the output file. This package's `__init__` imports
nothing, so that `dermsynth --help` (which imports `bench.cli`) does not load the benchmarks' PyTorch.
"""
