"""Throughput benchmark of the screening pipeline: ``python -m ohlora_eval.bench`` (``make bench``).

Why it exists: "batched, in memory" is only worth its complexity if it is much
faster than the original Oh-LoRA test (one image at a time through a JPEG file)
and close to what the models themselves can do. For the same vectors in one
process it reports:

1. Synthetic pipeline (``synthetic``): images/s of (p) the shipped measuring step,
   ``pipeline.measure.measure``, as the screening runs it (without the cache),
   (a) the bare ``synthesize`` + ``score`` forward at several batch sizes (the
   ceiling, ``forward``), (b) the original's way, one image at a time with a JPEG
   round trip (``original``); ratios p/a (target >= 0.8) and p/b (target >= 5).
2. Real Oh-LoRA networks (``real``) with deterministic recipe weights on one
   vector x 50 edits: the batched pipeline vs the original-style loop vs the
   bare batched forward.
3. Cutoff sweep cost (``sweep``): one full evaluation vs a 4-point
   ``cutoff.eyes`` sweep in the same store.

``timing`` holds the timers and the machine description, ``report`` the text
table, ``cli`` the flags and the JSON file. It is a benchmark, not a test: it
asserts nothing about speed and only reports what it measured.

Layering: the bench sits above ``apps`` and may import every package (it times
the shipped steps and the shipped evaluation); nothing imports the bench. See
docs/architecture.md.
"""
