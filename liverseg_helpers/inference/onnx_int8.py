"""Int8 twins: a network's ONNX twin whose convolutions compute on 8-bit integers.

A float32 twin (``onnx_model``) repeats the Keras network's arithmetic. *Static quantization*
(ONNX Runtime's ``quantize_static``) rewrites it so that each convolution multiplies 8-bit
integers: the weights per output channel, each layer's input per tensor, as a scale and a zero
point that map 256 integer steps onto a range of values. The weights' ranges are read from the
weights; the inputs' ranges are measured once, by running the float twin on *calibration*
slices and keeping the 99.9th percentile of each tensor's values (a range set by its rare
largest values would waste most of the 256 steps on them). CPUs multiply 8-bit integers several
times faster than 32-bit floats; the price is a rounding error in every layer, which moves the
network's probabilities a little and its outline by a fraction of a voxel.

The calibration slices are those the network is given when it segments two phantom patients
made by the package (:data:`CALIBRATION_SEEDS`, 512 x 512 pixels), through
``predict.predict_case`` itself, so they are preprocessed exactly as at prediction and no real
CT is needed on the user's machine. Weights keep 7 bits (``reduce_range``, which ONNX Runtime
advises for CPUs without VNNI instructions): such a CPU (AVX2 only) adds pairs of 8-bit
products in 16 bits, which full 8-bit weights can overflow (255 x 127 x 2 > 32767) and 7-bit
ones cannot (255 x 63 x 2), so it should compute the same sums as a CPU with VNNI.

``liverseg predict --runtime onnx-int8`` uses them (``auto`` for the pair, on VNNI CPUs):
:func:`int8_twin` makes one the first time (30-60 s per shipped model file on 2 cores) and
caches it beside the float twins, named after them. How this was chosen and what it changes on
real CT: docs/real_ct_experiments.md, "Int8 arithmetic in ONNX Runtime".
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from liverseg_helpers.atomic import atomic_file, write_json_atomic
from liverseg_helpers.data.download import hash_file
from liverseg_helpers.data.phantom import make_phantom_case
from liverseg_helpers.errors import ModelFileError
from liverseg_helpers.inference import onnx_model, predict
from liverseg_helpers.io.case import Case
from liverseg_helpers.preparation.preprocess import PreprocessSettings
from liverseg_helpers.training.sidecar import read_sidecar, sidecar_path

CALIBRATION_SEEDS = (901, 902)  # phantom patients whose slices set each tensor's range
CALIBRATION_PERCENTILE = 99.9
PHANTOM_SLICES, PHANTOM_PIXELS = 64, 512


class RecordingNetwork:
    """A network that keeps a copy of every batch it is given (the calibration slices)."""

    def __init__(self, network: Any) -> None:
        self.network = network
        self.input_shape = network.input_shape
        self.name = network.name
        self.batches: list[np.ndarray] = []

    def predict_on_batch(self, images: np.ndarray) -> np.ndarray:
        """The network's answer, after recording ``images``."""
        self.batches.append(np.array(images, dtype=np.float32))
        return self.network.predict_on_batch(images)


@functools.lru_cache(maxsize=1)
def calibration_phantoms(n_slices: int, size: int) -> tuple[Case, ...]:
    """The calibration phantoms, made once per process (each model file's twin uses them)."""
    return tuple(
        make_phantom_case(seed, n_slices=n_slices, size=size) for seed in CALIBRATION_SEEDS
    )


def calibration_batches(network: Any, settings: PreprocessSettings) -> list[np.ndarray]:
    """The batches ``network`` is given when it segments the calibration phantoms with its
    ``settings`` (view and preprocessing)."""
    recorder = RecordingNetwork(network)
    for case in calibration_phantoms(PHANTOM_SLICES, PHANTOM_PIXELS):
        predict.predict_case(recorder, case, settings=settings, precision="float32")
    return recorder.batches


def quantize_twin(float_twin: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the int8 twin of ``float_twin`` to ``out`` (atomically), then its sidecar.

    The sidecar is the float twin's, with the int8 file's SHA-256 and how it was quantized.

    Raises:
        ModelFileError: ONNX Runtime missing, or a file it cannot quantize.
    """
    onnx_model.onnxruntime_or_error()
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    float_twin, out = Path(float_twin), Path(out)
    sidecar = read_sidecar(float_twin)  # read (and the twin hashed) once
    network = onnx_model.load_network(float_twin, sidecar)
    batches = calibration_batches(network, predict.load_settings_for(float_twin, network, sidecar))
    input_name = network.input_name

    class Slices(CalibrationDataReader):
        """The batches, one per round: the calibrator keeps every layer's output of the
        batches it is given, and merges each round into its histograms (all at once, the
        shipped axial file took 19 GB of memory; one batch per round, 2.3 GB)."""

        def __init__(self) -> None:
            self.set_range(0, len(batches))

        def __len__(self) -> int:
            return len(batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.feeds = iter({input_name: batch} for batch in batches[start_index:end_index])

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    try:
        with (
            tempfile.TemporaryDirectory() as tmp_dir,
            atomic_file(out) as tmp,
            contextlib.redirect_stdout(io.StringIO()),  # the calibrator prints each round
        ):
            prepared = Path(tmp_dir) / "prepared.onnx"
            quant_pre_process(str(float_twin), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(tmp),
                Slices(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=True,
                calibrate_method=CalibrationMethod.Percentile,
                extra_options={"CalibPercentile": CALIBRATION_PERCENTILE, "CalibStridedMinMax": 1},
            )
            digest = hash_file(tmp, "sha256", progress=False)
    except Exception as err:  # noqa: BLE001 - the quantizer raises many kinds
        raise ModelFileError(f"{float_twin}: ONNX Runtime could not quantize it ({err})") from err
    sidecar = {**(sidecar or {}), "model_sha256": digest}
    sidecar["arithmetic"] = (
        f"int8 (ONNX Runtime static quantization, QDQ, weights per channel in 7 bits, inputs "
        f"calibrated at the {CALIBRATION_PERCENTILE}th percentile on phantom seeds "
        f"{list(CALIBRATION_SEEDS)})"
    )
    write_json_atomic(sidecar, sidecar_path(out))
    return out


def int8_path(float_twin: Path) -> Path:
    """Where the int8 twin of a float twin is cached: named after a cached twin, after the
    file's SHA-256 for an ``.onnx`` file given by the user."""
    if float_twin.parent == onnx_model.cache_dir():
        return float_twin.with_name(f"{float_twin.stem}-int8.onnx")
    digest = hash_file(float_twin, "sha256", progress=False)
    return onnx_model.cache_dir() / f"{float_twin.stem}-{digest[:16]}-int8.onnx"


def int8_twin(
    model_path: str | os.PathLike,
    first_member: bool = False,
    log: Callable[[str], object] | None = None,
    sidecar: dict | None = None,
) -> Path:
    """The int8 twin of a model file (``first_member``: of its first network), made from its
    float twin (``onnx_model.onnx_twin``, exported first if need be) the first time it is asked
    for, saying so to ``log``. ``sidecar``: the model's, when the caller has read it."""
    float_twin = onnx_model.onnx_twin(model_path, first_member, log, sidecar)
    path = int8_path(float_twin)
    if not onnx_model.twin_ready(path):
        if log is not None:
            log(f"quantizing {float_twin.name} to int8 once, for later runs: {path}")
        quantize_twin(float_twin, path)
    return path
