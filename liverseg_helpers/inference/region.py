"""Run a 2D network only on the slices that need it.

A 2D network sees one slice at a time, so leaving a slice out changes nothing on the others:
the time saved is exact. Two kinds of slice need no network of their own:

- a blank slice (all zeros after windowing: a coronal slice in front of or behind the body,
  where the CT has only air): every blank slice gives the same answer, so the network runs on
  one of them and the answer is copied (:func:`blank_slices`);
- an axial slice far above or below the liver, once the cheaper coronal networks of an
  ensemble have found it (:func:`liver_slab`): the axial networks run only on the liver's
  slices plus a margin, and say 0 elsewhere. They answer first for one batch holding the
  scan's end slices (:func:`first_batch`): where the scan stops inside the liver, the coronal
  networks are not to be trusted, so they are not run and the axial ones see every slice.

On a CT of thin slices, an axial network may also look at every second (third, ...) slice
only, so that the slices it sees lie at most ``step_mm`` apart (:func:`slice_step`,
:func:`thinned`), and the probabilities of the slices between are drawn as straight lines
along z from their two neighbours (:func:`fill_between`): neighbouring thin slices look alike.
Unlike the two above, this changes the answer a little; how much is measured in
``benchmarks/axial_step.py``.

Showing a network a part of each slice instead (cropping in-plane) was tried and dropped: a
UNet's zero padding is not the same as the body or air it replaces, and the masks moved
(``docs/results.md``). How much the slab changes the final mask is measured against every
slice in ``benchmarks/skip_slices.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from liverseg_helpers.inference import postprocess

SLAB_MARGIN_MM = 25.0  # above and below the coronal networks' liver
SLAB_THRESHOLD = 0.2  # the coronal networks' probability that counts as "maybe liver"
AXIAL_STEP_MM = 3.2  # the step measured for `--axial-step-mm` (an option; the default is 0)


def blank_slices(images: np.ndarray) -> np.ndarray:
    """bool ``(n,)``: the network-input slices ``(n, S, S, C)`` that hold only zeros."""
    return ~images.reshape(len(images), -1).any(axis=1)


def slices_to_run(chosen: np.ndarray, blank: np.ndarray) -> tuple[np.ndarray, int | None]:
    """The slice indices a network must see to answer for every ``chosen`` slice.

    Args:
        chosen: bool ``(n,)``: the slices whose probabilities are wanted.
        blank: bool ``(n,)`` from :func:`blank_slices`.

    Returns:
        ``(indices, stand_in)``: sorted indices to run (every chosen slice that is not blank,
        and the first chosen blank one), and that blank slice's index, whose answer stands
        for every chosen blank slice (None when no chosen slice is blank).
    """
    blank_chosen = np.flatnonzero(chosen & blank)
    stand_in = int(blank_chosen[0]) if len(blank_chosen) else None
    run = chosen & ~blank
    if stand_in is not None:
        run[stand_in] = True
    return np.flatnonzero(run), stand_in


def run_on_chosen_slices(
    run: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    chosen: np.ndarray | None = None,
) -> np.ndarray:
    """A network's answers for the ``chosen`` slices, each blank slice run only once.

    Every blank slice (:func:`blank_slices`) gives the same answer, so the first one's stands
    for all (:func:`slices_to_run`); the other slices are run as they are.

    Args:
        run: The network on a stack of slices: ``(k, S, S, C)`` to ``(k, S, S)``
            (``predict.run_model_on_slices``).
        images: float32 ``(n, S, S, C)`` network input.
        chosen: bool ``(n,)``: the slices to answer for; the others get 0. None: every slice.

    Returns:
        float32 ``(n, S, S)``.
    """
    chosen = np.ones(len(images), dtype=bool) if chosen is None else chosen
    blank = blank_slices(images)
    indices, stand_in = slices_to_run(chosen, blank)
    out = np.zeros(images.shape[:3], dtype=np.float32)
    if len(indices) == 0:
        return out
    out[indices] = run(images[indices])
    if stand_in is not None:
        out[chosen & blank] = out[stand_in]
    return out


def first_batch(n_slices: int, size: int) -> np.ndarray:
    """The slices the axial networks answer for first: the scan's first and last slice, and
    the middle ones to fill a batch of ``size`` (most often liver, so seldom wasted).

    The end slices tell whether the scan stops inside the liver
    (``ensemble_members.end_slices_show_liver``) before the turned networks are run.

    Returns:
        bool ``(n_slices,)`` with ``min(size, n_slices)`` slices chosen (at least the two ends).
    """
    chosen = np.zeros(n_slices, dtype=bool)
    chosen[[0, -1]] = True
    fill = max(min(size, n_slices) - 2, 0)
    start = max((n_slices - fill) // 2, 0)
    chosen[start : start + fill] = True
    return chosen


def liver_slab(
    probs: np.ndarray,
    spacing_mm: tuple[float, float, float],
    threshold: float = SLAB_THRESHOLD,
    margin_mm: float = SLAB_MARGIN_MM,
) -> np.ndarray | None:
    """The axial slices around a liver found by other networks, where the axial ones must look.

    Args:
        probs: float ``[z, y, x]`` liver probabilities on the CT's grid (the mean of an
            ensemble's coronal networks).
        spacing_mm: Voxel size ``(z, y, x)``.
        threshold: Voxels above it count as possible liver (kept low: a slab too thick costs
            time, one too thin costs liver); their largest connected piece sets the slab, as
            the final mask is the largest piece (``postprocess.keep_largest_component``).
        margin_mm: Added above and below.

    Returns:
        bool ``(z,)``, True for the slab's slices; None when nothing is above ``threshold``
        (then every slice is to be looked at).
    """
    hits = probs > threshold
    if not hits.any():
        return None
    hits = postprocess.keep_largest_component(hits)
    found = np.flatnonzero(hits.any(axis=(1, 2)))
    margin = int(np.ceil(margin_mm / float(spacing_mm[0])))
    slab = np.zeros(len(probs), dtype=bool)
    slab[max(int(found[0]) - margin, 0) : int(found[-1]) + 1 + margin] = True
    return slab


def slice_step(spacing_z_mm: float, step_mm: float) -> int:
    """Every how many slices an axial network looks: the most slices that span at most
    ``step_mm`` (1 for slices thicker than half of it, and when ``step_mm`` <= 0)."""
    if step_mm <= 0 or spacing_z_mm <= 0:
        return 1
    return max(1, int(np.floor(step_mm / float(spacing_z_mm) + 1e-6)))


def thinned(chosen: np.ndarray, step: int) -> np.ndarray:
    """Every ``step``-th of the ``chosen`` slices, and the last one of each unbroken run of them.

    Keeping both ends of every run means each chosen slice left out lies between two kept
    slices of its own run, so :func:`fill_between` can draw it from them.

    Args:
        chosen: bool ``(n,)``.
        step: 1 keeps every chosen slice.

    Returns:
        bool ``(n,)``, a subset of ``chosen``.
    """
    kept = np.zeros_like(chosen, dtype=bool)
    indices = np.flatnonzero(chosen)
    if step <= 1 or len(indices) == 0:
        kept[indices] = True
        return kept
    for run in np.split(indices, np.flatnonzero(np.diff(indices) > 1) + 1):
        kept[run[::step]] = True
        kept[run[-1]] = True
    return kept


def predict_thinned(
    predict_slices: Callable[[np.ndarray], np.ndarray], wanted: np.ndarray, step: int
) -> np.ndarray:
    """A network's probabilities for the ``wanted`` slices, seen on every ``step``-th of them.

    Args:
        predict_slices: ``predict_slices(ran)``: float32 ``[z, y, x]`` probabilities of the
            CT, right on the ``ran`` slices (``predict.predict_volume`` with ``slices=ran``).
        wanted: bool ``(z,)``, the slices whose probabilities are wanted.
        step: From :func:`slice_step`.

    Returns:
        float32 ``[z, y, x]``: seen on :func:`thinned` slices, drawn between them
        (:func:`fill_between`), 0 on the slices not wanted.
    """
    ran = thinned(wanted, step)
    return fill_between(predict_slices(ran), ran, wanted)


def fill_between(probs: np.ndarray, ran: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Fill the ``chosen`` slices a network did not see by linear interpolation along z.

    Args:
        probs: float ``[z, y, x]``, known on the ``ran`` slices; changed in place.
        ran: bool ``(z,)``, the slices the network saw (:func:`thinned` of ``chosen``).
        chosen: bool ``(z,)``, the slices whose probabilities are wanted.

    Returns:
        ``probs``, every chosen slice filled.

    Raises:
        ValueError: A slice to fill without a seen slice on both sides.
    """
    todo = np.flatnonzero(chosen & ~ran)
    if len(todo) == 0:
        return probs
    known = np.flatnonzero(ran)
    above = np.searchsorted(known, todo)
    if len(known) == 0 or above.min() == 0 or above.max() == len(known):
        raise ValueError("every slice to fill needs a slice the network saw on both sides")
    low, high = known[above - 1], known[above]
    weight = ((todo - low) / (high - low)).astype(np.float32)[:, None, None]
    probs[todo] = (1.0 - weight) * probs[low] + weight * probs[high]
    return probs
