"""The start of a training: variables made before it (``fit.make_training_variables``) or not.

TensorFlow traces a training step into a graph the first time it runs it. If Adam's, the
loss's and the metrics' variables do not exist yet, the first trace makes them, and the step
must then be traced again. ``fit.compile_model`` makes them first, so the step is traced once.

For each profile, this trains the profile's UNet for ``--epochs`` epochs on ``--slices`` random
slices, in one process, alternating the two ways ``--repeat`` times: ``made first`` (the code as
it is) and ``made in the trace`` (``make_training_variables`` replaced by nothing). Prints per
profile the seconds of each (median), their ratio, the traces of the training step, and
whether the two losses agree; then one JSON line. A benchmark, not a test: read the ratio.

Usage::

    python benchmarks/training_start.py [--profiles smoke course] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from liverseg_helpers import config  # noqa: E402
from liverseg_helpers.training import fit, model  # noqa: E402

WAYS = ("made first", "made in the trace")


def train_once(profile: config.Profile, way: str, slices: int, epochs: int) -> dict:
    """One short training of a fresh UNet: seconds of ``fit_model``, traces, losses."""
    config.set_seeds(0)
    rng = np.random.default_rng(0)
    size = profile.image_size
    x = rng.random((slices, size, size, 1), dtype=np.float32)
    y = (x > 0.6).astype(np.float32)
    unet = model.model_from_profile(profile)
    traces, train_step = [], unet.train_step
    unet.train_step = lambda data: traces.append(1) or train_step(data)
    made = fit.make_training_variables
    if way == "made in the trace":
        fit.make_training_variables = lambda _model: None
    try:
        with tempfile.TemporaryDirectory() as run_dir:
            start = time.perf_counter()
            history = fit.fit_model(
                unet, (x, y), (x[:8], y[:8]), run_dir, profile, "dice", epochs=epochs, verbose=0
            )
            seconds = time.perf_counter() - start
    finally:
        fit.make_training_variables = made
    return {"seconds": seconds, "traces": len(traces), "loss": history["loss"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=["smoke", "course"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    summary = {}
    for name in args.profiles:
        profile = config.get_profile(name)
        runs: dict[str, list[dict]] = {way: [] for way in WAYS}
        for turn in range(args.repeat):
            for way in WAYS if turn % 2 == 0 else WAYS[::-1]:
                runs[way].append(train_once(profile, way, args.slices, args.epochs))
        seconds = {way: statistics.median(r["seconds"] for r in runs[way]) for way in WAYS}
        row = {
            "seconds": seconds,
            "ratio": seconds[WAYS[0]] / seconds[WAYS[1]],
            "traces": {way: runs[way][0]["traces"] for way in WAYS},
            "same_loss": runs[WAYS[0]][0]["loss"] == runs[WAYS[1]][0]["loss"],
        }
        summary[name] = row
        print(
            f"{name}: {args.epochs} epochs of {args.slices} slices ({profile.image_size} px, "
            f"{profile.base_filters} filters): made first {seconds[WAYS[0]]:.2f} s, made in the "
            f"trace {seconds[WAYS[1]]:.2f} s, ratio {row['ratio']:.2f}; traces "
            f"{row['traces'][WAYS[0]]} / {row['traces'][WAYS[1]]}; same loss: {row['same_loss']}"
        )
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
