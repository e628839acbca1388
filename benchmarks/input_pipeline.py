"""Does the input pipeline keep up with training? A benchmark, not a test.

Measures, in one run and on the same slices:

* ``pipeline``: slices/s delivered by ``dataset.make_train_ds`` with augmentation
  (rotation, scaling, shift, elastic deformation, intensity), from an in-memory cache.
* ``baseline``: the paper's way: PNG files on disk read by two Keras ``ImageDataGenerator``
  ``flow_from_directory`` streams (image and mask, same seed) with rotation, shift and
  zoom; if the legacy generator no longer imports, a Python generator doing the same
  (cv2.imread, scipy affine per image and mask, batching in Python).
* ``train_step``: slices/s the paper's UNet (256x256, batch 16) consumes in a training step
  on this machine, after warm-up.

Prints one JSON line at the end. Usage::

    python benchmarks/input_pipeline.py [--n-slices 256] [--epochs 3] [--size 256] [--train-steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from liverseg_helpers.data import phantom  # noqa: E402
from liverseg_helpers.preparation import dataset  # noqa: E402
from liverseg_helpers.preparation import preprocess as pp  # noqa: E402


def make_slices(n_slices: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed phantom slices ``(n, size, size, 1)`` and liver masks."""
    settings = pp.PreprocessSettings(image_size=size)
    xs, ys = [], []
    patient = 0
    while sum(len(x) for x in xs) < n_slices:
        case = phantom.make_phantom_case(seed + patient, n_slices=64, size=size)
        xs.append(pp.preprocess_volume(case.volume, settings, case.spacing_mm))
        ys.append(pp.preprocess_mask(case.masks["liver"], settings, case.spacing_mm))
        patient += 1
    return np.concatenate(xs)[:n_slices], np.concatenate(ys)[:n_slices]


def rate_of(batches, n_slices: int, warmup_batches: int = 1) -> float:
    """Slices per second drawn from an iterator of ``(images, masks)`` batches."""
    iterator = iter(batches)
    for _ in range(warmup_batches):
        next(iterator)
    seen, start = 0, time.perf_counter()
    while seen < n_slices:
        images, _ = next(iterator)
        seen += len(images)
    return seen / (time.perf_counter() - start)


def measure_pipeline(x, y, batch_size: int, seed: int, n_slices: int) -> float:
    train_ds = dataset.make_train_ds(x, y, batch_size, seed=seed, augment=True).repeat()
    return rate_of(train_ds, n_slices, warmup_batches=2)


def write_pngs(x: np.ndarray, y: np.ndarray, folder: Path) -> None:
    """The paper's export: 8-bit PNG per slice, images and masks in parallel folders."""
    for sub in ("images/all", "masks/all"):
        (folder / sub).mkdir(parents=True)
    for i in range(len(x)):
        cv2.imwrite(
            str(folder / f"images/all/{i:05d}.png"), np.round(x[i, ..., 0] * 255).astype(np.uint8)
        )
        cv2.imwrite(str(folder / f"masks/all/{i:05d}.png"), y[i, ..., 0] * 255)


def baseline_keras_generator(folder: Path, size: int, batch_size: int, seed: int):
    """The paper's pipeline: two ImageDataGenerator streams zipped, same seed."""
    from tensorflow.keras.preprocessing.image import ImageDataGenerator

    aug = dict(rotation_range=15, width_shift_range=0.06, height_shift_range=0.06, zoom_range=0.1)
    flows = [
        ImageDataGenerator(rescale=1 / 255.0, **aug).flow_from_directory(
            str(folder / sub),
            target_size=(size, size),
            color_mode="grayscale",
            class_mode=None,
            batch_size=batch_size,
            seed=seed,
        )
        for sub in ("images", "masks")
    ]
    for images, masks in zip(*flows, strict=True):
        yield images, (masks > 0.5).astype(np.float32)


def baseline_python_generator(folder: Path, size: int, batch_size: int, seed: int):
    """Fallback equivalent: cv2.imread, scipy affine per image and mask, Python batching."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    names = sorted((folder / "images/all").glob("*.png"))
    while True:
        for start in range(0, len(names) - batch_size + 1, batch_size):
            images, masks = [], []
            for name in names[start : start + batch_size]:
                image = cv2.imread(str(name), cv2.IMREAD_GRAYSCALE) / 255.0
                mask = (
                    cv2.imread(str(folder / "masks/all" / name.name), cv2.IMREAD_GRAYSCALE) / 255.0
                )
                angle = np.deg2rad(rng.uniform(-15, 15))
                zoom = rng.uniform(0.9, 1.1)
                matrix = (
                    np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
                    / zoom
                )
                centre = np.array(image.shape) / 2
                offset = centre - matrix @ centre + rng.uniform(-0.06, 0.06, 2) * size
                images.append(ndimage.affine_transform(image, matrix, offset, order=1))
                masks.append(ndimage.affine_transform(mask, matrix, offset, order=0) > 0.5)
            yield np.stack(images)[..., None], np.stack(masks)[..., None].astype(np.float32)


def measure_baseline(
    x, y, size: int, batch_size: int, seed: int, n_slices: int
) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_pngs(x, y, folder)
        try:
            batches = baseline_keras_generator(folder, size, batch_size, seed)
            kind = "keras ImageDataGenerator (tensorflow.keras.preprocessing.image)"
            rate = rate_of(batches, n_slices)
        except ImportError:
            batches = baseline_python_generator(folder, size, batch_size, seed)
            kind = "python generator (cv2.imread + scipy affine)"
            rate = rate_of(batches, n_slices)
    return rate, kind


def measure_train_step(size: int, batch_size: int, steps: int, seed: int) -> float:
    """Slices/s of the paper's UNet training step (after two warm-up steps)."""
    import keras

    try:
        from liverseg_helpers.training.model import build_unet

        model = build_unet((size, size, 1), base_filters=32, depth=4)
    except ImportError:  # the model chapter is missing: the paper's UNet inline
        inputs = keras.Input((size, size, 1))
        skips, h = [], inputs
        for level in range(5):
            filters = 32 * 2**level
            h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
            h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
            if level < 4:
                skips.append(h)
                h = keras.layers.MaxPooling2D()(h)
        for level in reversed(range(4)):
            h = keras.layers.Conv2DTranspose(32 * 2**level, 2, strides=2)(h)
            h = keras.layers.Concatenate()([h, skips[level]])
            h = keras.layers.Conv2D(32 * 2**level, 3, padding="same", activation="relu")(h)
            h = keras.layers.Conv2D(32 * 2**level, 3, padding="same", activation="relu")(h)
        model = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(h))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    rng = np.random.default_rng(seed)
    images = rng.random((batch_size, size, size, 1), dtype=np.float32)
    masks = (rng.random((batch_size, size, size, 1)) > 0.5).astype(np.float32)
    for _ in range(2):
        model.train_on_batch(images, masks)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, masks)
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-slices", type=int, default=256, help="slices in the data set")
    parser.add_argument("--epochs", type=int, default=3, help="passes timed per pipeline")
    parser.add_argument("--size", type=int, default=256, help="slice side in pixels")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-steps", type=int, default=3, help="timed UNet steps")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    x, y = make_slices(args.n_slices, args.size, args.seed)
    print(f"slices: {x.shape} images, {y.shape} masks, cores: {os.cpu_count()}")
    pipeline = measure_pipeline(x, y, args.batch_size, args.seed, args.epochs * len(x))
    print(f"pipeline (tf.data + augmentation): {pipeline:.1f} slices/s")
    baseline, kind = measure_baseline(
        x, y, args.size, args.batch_size, args.seed, args.epochs * len(x)
    )
    print(f"baseline ({kind}): {baseline:.1f} slices/s")
    train_step = measure_train_step(args.size, args.batch_size, args.train_steps, args.seed)
    shape = f"{args.size}x{args.size}, batch {args.batch_size}"
    print(f"UNet train step ({shape}): {train_step:.2f} slices/s")
    result = dict(
        pipeline_slices_per_s=round(pipeline, 1),
        baseline_slices_per_s=round(baseline, 1),
        train_step_slices_per_s=round(train_step, 2),
        pipeline_over_train_step=round(pipeline / train_step, 1),
        pipeline_over_baseline=round(pipeline / baseline, 2),
        baseline=kind,
        image_size=args.size,
        batch_size=args.batch_size,
        n_slices=args.n_slices,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
