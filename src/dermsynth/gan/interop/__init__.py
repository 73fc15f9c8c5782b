"""Published StyleGAN2 checkpoints in and out of dermsynth, without executing anything stored in them.

* `safepickle` — a restricted unpickler for NVIDIA's network pickles (stylegan2-ada-pytorch / stylegan3): it
  accepts only the persistence records, tensor storages and plain containers those files are made of, reads
  each record's state as data (the stored module source is never executed) and refuses every other global.
* `nvidia` — NVIDIA `.pkl` ↔ dermsynth: parameter names, architecture (init kwargs), writer for tests/benchmarks.
* `rosinality` — rosinality's `.pt` (`g`, `d`, `g_ema`, `latent_avg`; the format of e4e, HyperStyle) ↔ dermsynth.
* `imported` — what both share: the architecture read from a file, the shape-checked load into dermsynth's
  `Generator`/`Discriminator`, the imported checkpoint written by `dermsynth gan import`.
* `checkpoint` — any of those files read by content (`read_checkpoint`), the initial state of a fine-tuning run
  (`gans.<name>.init`: `initialise`), and the rosinality export.

Background: docs/transfer-learning.md.
"""
