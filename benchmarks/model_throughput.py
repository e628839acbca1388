"""Throughput of the paper's UNet (256x256x1, 32-512 filters, or another size) on this machine.

Not a test. Measures, in one run (about 2-3 minutes on a 2-core CPU):

* training and inference slices/s at batch 16 (float32, TensorFlow's default oneDNN on);
* forward GFLOPs per slice counted from the layer shapes (training ~3x forward);
* the machine's matmul peak, measured now with a 4096x4096 float32 ``tf.matmul``;
* the achieved fraction of that peak for inference and training;
* two variants, each in a fresh process because TensorFlow reads the switch at import:
  ``TF_ENABLE_ONEDNN_OPTS=0`` and the ``mixed_bfloat16`` Keras policy.

Prints a readable table, then one JSON line (the last line). Numbers on a shared machine
are noisy: report them as measured, with the load average printed alongside.

Usage::

    python benchmarks/model_throughput.py              # everything
    python benchmarks/model_throughput.py --quick      # fewer repetitions
    python benchmarks/model_throughput.py --size 128   # the course's input (the shipped
                                                       # networks; --filters 16: the narrow)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BATCH = 16
IMAGE = 256


def measure_matmul_peak_gflops(n: int = 4096, reps: int = 3) -> float:
    """Best of ``reps`` float32 n x n matmuls, in GFLOP/s (2 n^3 operations each)."""
    import tensorflow as tf

    a = tf.random.normal((n, n), seed=1)
    b = tf.random.normal((n, n), seed=2)
    tf.matmul(a, b).numpy()  # warm-up
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        tf.matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def measure_unet(
    policy: str, train_steps: int, infer_batches: int, size: int = IMAGE, filters: int = 32
) -> dict:
    """Slices/s of the UNet (the paper's by default) for training steps and inference batches."""
    import keras
    import numpy as np

    from liverseg_helpers.training import losses
    from liverseg_helpers.training import model as model_mod

    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    unet = model_mod.build_unet((size, size, 1), base_filters=filters)
    unet.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.dice_loss)
    rng = np.random.default_rng(0)
    x = rng.random((BATCH, size, size, 1), dtype=np.float32)
    y = (rng.random((BATCH, size, size, 1)) > 0.7).astype(np.float32)

    unet.predict_on_batch(x)  # warm-up: traces and compiles the predict function
    start = time.perf_counter()
    for _ in range(infer_batches):
        unet.predict_on_batch(x)
    infer_s = (time.perf_counter() - start) / infer_batches

    result = {"policy": policy, "infer_slices_per_s": BATCH / infer_s}
    if train_steps:
        unet.train_on_batch(x, y)  # warm-up
        start = time.perf_counter()
        for _ in range(train_steps):
            loss = unet.train_on_batch(x, y)
        train_s = (time.perf_counter() - start) / train_steps
        result["train_slices_per_s"] = BATCH / train_s
        result["train_loss_finite"] = bool(np.isfinite(np.asarray(loss)).all())
    result["forward_gflops_per_slice"] = model_mod.count_conv_flops(unet) / 1e9
    result["params"] = unet.count_params()
    return result


def run_variant(
    name: str, env: dict, policy: str, train_steps: int, infer_batches: int, shape: list[str]
) -> dict:
    """Run :func:`measure_unet` in a fresh Python process (env switches need a new import);
    ``shape`` is the ``--size``/``--filters`` arguments passed on."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--policy",
        policy,
        "--train-steps",
        str(train_steps),
        "--infer-batches",
        str(infer_batches),
        *shape,
    ]
    proc = subprocess.run(
        cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=240
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"variant": name, "error": (proc.stderr or proc.stdout)[-300:]}
    return {"variant": name, **json.loads(lines[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--size", type=int, default=IMAGE, help="input pixels (default 256)")
    parser.add_argument("--filters", type=int, default=32, help="first level's filters")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--policy", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--train-steps", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--infer-batches", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(
            json.dumps(
                measure_unet(
                    args.policy, args.train_steps, args.infer_batches, args.size, args.filters
                )
            )
        )
        return
    shape = ["--size", str(args.size), "--filters", str(args.filters)]

    started = time.perf_counter()
    steps, batches = (1, 2) if args.quick else (2, 3)
    load_before = os.getloadavg()[0]
    # Peak before and after the model runs; the best of both is the least disturbed by
    # other users of a shared machine.
    peak_before = measure_matmul_peak_gflops(reps=2 if args.quick else 3)
    base = run_variant("float32 (oneDNN on)", {}, "float32", steps, batches, shape)
    # Variants: inference only, to stay within the time budget.
    no_onednn = run_variant(
        "float32, TF_ENABLE_ONEDNN_OPTS=0",
        {"TF_ENABLE_ONEDNN_OPTS": "0"},
        "float32",
        0,
        batches,
        shape,
    )
    bf16 = run_variant("mixed_bfloat16", {}, "mixed_bfloat16", steps, batches, shape)
    peak = max(peak_before, measure_matmul_peak_gflops(reps=2 if args.quick else 3))

    fwd = base.get("forward_gflops_per_slice", float("nan"))
    infer_gflops = base.get("infer_slices_per_s", float("nan")) * fwd
    train_gflops = base.get("train_slices_per_s", float("nan")) * 3 * fwd
    print(f"machine: {os.cpu_count()} CPUs, load average {load_before:.1f} at start")
    print(
        f"UNet {args.size}x{args.size}x1, {args.filters} filters first, batch {BATCH}: "
        f"forward {fwd:.2f} GFLOPs/slice, "
        f"training ~{3 * fwd:.1f} GFLOPs/slice"
    )
    print(f"matmul peak (4096^2 float32): {peak:.1f} GFLOP/s")
    for row in (base, no_onednn, bf16):
        if "error" in row:
            print(f"  {row['variant']:36s} failed: {row['error']}")
            continue
        train = row.get("train_slices_per_s")
        train_text = f"{train:6.2f}" if train else "   n/a"
        print(
            f"  {row['variant']:36s} inference {row['infer_slices_per_s']:6.2f} slices/s   "
            f"training {train_text} slices/s"
        )
    print(
        f"achieved: inference {infer_gflops:.1f} GFLOP/s ({infer_gflops / peak:.0%} of peak), "
        f"training {train_gflops:.1f} GFLOP/s ({train_gflops / peak:.0%} of peak)"
    )
    summary = {
        "benchmark": "model_throughput",
        "batch_size": BATCH,
        "image_size": args.size,
        "base_filters": args.filters,
        "params": base.get("params"),
        "forward_gflops_per_slice": round(fwd, 3),
        "train_gflops_per_slice": round(3 * fwd, 3),
        "infer_slices_per_s": round(base.get("infer_slices_per_s", float("nan")), 3),
        "train_slices_per_s": round(base.get("train_slices_per_s", float("nan")), 3),
        "matmul_peak_gflops": round(peak, 1),
        "infer_fraction_of_peak": round(infer_gflops / peak, 3),
        "train_fraction_of_peak": round(train_gflops / peak, 3),
        "onednn_off_infer_slices_per_s": round(
            no_onednn.get("infer_slices_per_s", float("nan")), 3
        ),
        "bf16_infer_slices_per_s": round(bf16.get("infer_slices_per_s", float("nan")), 3),
        "bf16_train_slices_per_s": round(bf16.get("train_slices_per_s", float("nan")), 3),
        "bf16_over_float32_train": round(
            bf16.get("train_slices_per_s", float("nan"))
            / base.get("train_slices_per_s", float("nan")),
            2,
        ),
        "cpu_count": os.cpu_count(),
        "load_avg_start": round(load_before, 2),
        "load_avg_end": round(os.getloadavg()[0], 2),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
