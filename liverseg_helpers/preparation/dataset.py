"""From cached slices to training batches: tf.data or a PyDataset.

The slices come from the slice cache (:mod:`liverseg_helpers.preparation.slice_cache`:
``build_slice_cache`` once per patient, ``load_cached_slices`` for one split).
:func:`make_train_data` / :func:`make_val_data` feed a model. With TensorFlow they build
tf.data pipelines (:func:`make_train_ds` / :func:`make_val_ds`): shuffling, augmentation on
whole batches in parallel, prefetching, so the CPU prepares the next batches while the model
trains. With another Keras backend (JAX on a GPU machine without TensorFlow) they build a
``keras.utils.PyDataset`` that does the same with NumPy (:func:`make_numpy_sequence`).

TensorFlow and Keras are imported inside the functions that need them.
"""

from __future__ import annotations

import numpy as np

from liverseg_helpers.errors import DataError
from liverseg_helpers.preparation.augment import (
    AugmentSettings,
    augment_batch_numpy,
    augment_batch_tf,
)


def _check_xy(x: np.ndarray, y: np.ndarray) -> None:
    if x.ndim != 4 or len(x) == 0:
        raise DataError(f"images: expected (n, S, S, C) with n > 0, got {x.shape}")
    if y.shape != x.shape[:3] + (1,):
        raise DataError(f"masks: shape {y.shape} does not fit images {x.shape}")
    if ((y != 0) & (y != 1)).any():
        raise DataError(f"masks: not binary (values {np.unique(y)[:6]}); expected 0/1")
    if not np.isfinite(x).all():
        raise DataError("images: NaN or infinite values; rebuild the slice cache")


def make_train_ds(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    seed: int,
    augment: bool = True,
    augment_settings: AugmentSettings | None = None,
    passes_done: int = 0,
):
    """Training batches: shuffle, batch, augment in parallel, prefetch.

    Args:
        x: Images ``(n, S, S, C)`` in ``[0, 1]`` (from :func:`load_cached_slices`).
        y: Masks ``(n, S, S, 1)`` of 0/1.
        batch_size: Slices per batch.
        seed: Seeds shuffling and augmentation: the same seed gives the same batches.
        augment: Apply random geometric (image and mask together) and intensity transforms.
        augment_settings: Transform ranges.
        passes_done: Passes over this dataset an earlier run already began (each new
            iterator is a new pass, reshuffled and re-augmented). A resumed run skips them,
            so it sees the batches a run straight through would have seen
            (:func:`passes_before_epoch`).

    Returns:
        ``tf.data.Dataset`` of ``(images float32, masks float32)``, one pass per epoch,
        reshuffled and re-augmented every epoch.
    """
    import tensorflow as tf

    _check_xy(x, y)
    # The plan of a pass, slice numbers and one stateless seed pair per batch, is cheap to
    # draw; drawing it ``passes_done`` times moves the shuffle and seed generators (shared by
    # every dataset built on the plan) to where an uninterrupted run would be.
    order = tf.data.Dataset.range(len(x))
    plan = order.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    plan = tf.data.Dataset.zip(
        (plan, tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2))
    )
    for _ in range(passes_done):
        for _ in plan:
            pass
    images, masks = tf.constant(x), tf.constant(y)

    def load(indices, batch_seed):
        batch_x = tf.cast(tf.gather(images, indices), tf.float32)
        batch_y = tf.cast(tf.gather(masks, indices), tf.float32)
        if augment:
            return augment_batch_tf(batch_x, batch_y, batch_seed, augment_settings)
        return batch_x, batch_y

    ds = plan.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def make_val_ds(x: np.ndarray, y: np.ndarray, batch_size: int):
    """Validation batches in a fixed order, no augmentation (``tf.data.Dataset``)."""
    import tensorflow as tf

    _check_xy(x, y)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    ds = ds.map(lambda a, b: (tf.cast(a, tf.float32), tf.cast(b, tf.float32)))
    return ds.prefetch(tf.data.AUTOTUNE)


def make_numpy_sequence(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    seed: int,
    augment: bool = True,
    augment_settings: AugmentSettings | None = None,
    shuffle: bool = True,
    first_epoch: int = 0,
    **pydataset_kwargs,
):
    """The same batches as :func:`make_train_ds` without TensorFlow (any Keras backend).

    Args:
        x, y, batch_size, seed, augment, augment_settings: As in :func:`make_train_ds`.
        shuffle: Reshuffle every epoch (False for validation).
        first_epoch: Epochs already trained (a resumed run): its first epoch gets the order
            and augmentation of that epoch, as in a run straight through.
        **pydataset_kwargs: ``workers``, ``use_multiprocessing``, ``max_queue_size``.

    Returns:
        A ``keras.utils.PyDataset`` of ``(images float32, masks float32)`` batches.
    """
    import keras

    _check_xy(x, y)

    class SliceSequence(keras.utils.PyDataset):
        """Batches of cached slices, augmented with NumPy/OpenCV."""

        def __init__(self) -> None:
            super().__init__(**pydataset_kwargs)
            self.epoch = first_epoch
            self.order = self._make_order()

        def _make_order(self) -> np.ndarray:
            if not shuffle:
                return np.arange(len(x))
            return np.random.default_rng([seed, self.epoch]).permutation(len(x))

        def __len__(self) -> int:
            return -(-len(x) // batch_size)

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            chosen = np.sort(self.order[index * batch_size : (index + 1) * batch_size])
            images, masks = x[chosen].astype(np.float32), y[chosen].astype(np.float32)
            if augment:
                rng = np.random.default_rng([seed, self.epoch, index])
                images, masks = augment_batch_numpy(images, masks, rng, augment_settings)
            return images, masks

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self.order = self._make_order()

    return SliceSequence()


def passes_before_epoch(epoch: int) -> int:
    """Passes over a finite ``tf.data`` training set that ``model.fit`` began before ``epoch``.

    Keras 3's fit (without ``steps_per_epoch``) opens a new iterator at each epoch's start and
    another once the epoch has used up its batches, so epoch ``k`` reads pass ``2k`` and a
    resumed run must skip ``2k`` passes to see the same data. ``test_crossval`` checks that a
    stopped and resumed training ends with the weights of one run straight through, so a
    Keras that counts otherwise fails there.
    """
    return 2 * epoch


def make_train_data(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    seed: int,
    augment: bool = True,
    augment_settings: AugmentSettings | None = None,
    first_epoch: int = 0,
    workers: int = 1,
):
    """Training batches for the Keras backend in use: tf.data with TensorFlow, else a PyDataset.

    Both give the same kind of batches (shuffled, augmented, new every epoch); the PyDataset
    needs no TensorFlow, for machines that run Keras on JAX or PyTorch.

    Args:
        x, y, batch_size, seed, augment, augment_settings: As in :func:`make_train_ds`.
        first_epoch: Epochs already trained (a resumed run), so its first epoch gets the
            batches a run straight through would have had.
        workers: Threads that prepare the PyDataset's batches (a GPU trains faster than one
            CPU core augments); each batch's augmentation is seeded by its epoch and index,
            so the batches do not depend on it. tf.data chooses its own parallelism.

    Returns:
        A ``tf.data.Dataset`` or a ``keras.utils.PyDataset`` of ``(images, masks)`` batches.
    """
    import keras

    batches = (x, y, batch_size, seed, augment, augment_settings)
    if keras.backend.backend() == "tensorflow":
        return make_train_ds(*batches, passes_done=passes_before_epoch(first_epoch))
    return make_numpy_sequence(*batches, first_epoch=first_epoch, workers=workers)


def make_val_data(x: np.ndarray, y: np.ndarray, batch_size: int):
    """Validation batches in a fixed order, no augmentation, for the Keras backend in use."""
    import keras

    if keras.backend.backend() == "tensorflow":
        return make_val_ds(x, y, batch_size)
    return make_numpy_sequence(x, y, batch_size, seed=0, augment=False, shuffle=False)


def plot_augmentation_grid(ds_or_xy, n: int = 8, seed: int = 0):
    """Show slices with their mask outline: originals above augmented copies.

    Args:
        ds_or_xy: ``(x, y)`` arrays (augmented here with NumPy) or a dataset yielding
            ``(images, masks)`` batches (shown as they come; one row).
        n: Slices to show.
        seed: Seed of the augmentation and of the choice of slices.

    Returns:
        matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt

    if isinstance(ds_or_xy, tuple):
        x, y = ds_or_xy
        chosen = np.sort(np.random.default_rng(seed).choice(len(x), min(n, len(x)), False))
        images, masks = x[chosen].astype(np.float32), y[chosen].astype(np.float32)
        aug = augment_batch_numpy(images, masks, np.random.default_rng(seed))
        rows = [("original", images, masks), ("augmented", *aug)]
    else:
        batches_images, batches_masks = [], []
        for images, masks in ds_or_xy:
            batches_images.append(np.asarray(images))
            batches_masks.append(np.asarray(masks))
            if sum(len(b) for b in batches_images) >= n:
                break
        rows = [("batch", np.concatenate(batches_images)[:n], np.concatenate(batches_masks)[:n])]
    n_cols = len(rows[0][1])
    fig, axes = plt.subplots(
        len(rows), n_cols, figsize=(2.0 * n_cols, 2.5 * len(rows)), squeeze=False
    )
    for row, (label, images, masks) in enumerate(rows):
        for col in range(n_cols):
            ax = axes[row, col]
            ax.imshow(images[col, :, :, images.shape[-1] // 2], cmap="gray", vmin=0, vmax=1)
            if masks[col].any():
                ax.contour(masks[col, :, :, 0], levels=[0.5], colors="tab:red", linewidths=1)
            ax.set_title(f"{label} {col}", fontsize=8)
            ax.axis("off")
    fig.suptitle("Augmentation: CT (liver window) with mask outline in red")
    fig.tight_layout()
    return fig
