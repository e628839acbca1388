"""A trained network run by ONNX Runtime instead of TensorFlow: the same answer, sooner on CPU.

A ``.keras`` file can be exported to ONNX, a file format for networks that other programs run.
ONNX Runtime is one: a small library that computes a network's convolutions on the CPU (about
1.5x as fast as TensorFlow in float32 for the course's UNet on 2 cores; slower than TensorFlow
in bfloat16 where the CPU has bfloat16 hardware) and that starts in a fraction of a second,
where importing TensorFlow takes several, so the whole command is sooner on either CPU
(``benchmarks/predict_command.py --mode "onnx=--runtime onnx"``, docs/results.md).

``liverseg predict --runtime onnx`` uses it. The first time, each model file is exported to its
*ONNX twin* (:func:`onnx_twin`; this once needs TensorFlow and ``tf2onnx``), written atomically
to a cache folder (:func:`cache_dir`) with a copy of the model's sidecar, named by the model
file's SHA-256 so a changed model gets a new twin. Later runs read the twin alone, and the
command never imports TensorFlow. A twin holds the model's arithmetic in float32 (int8 weights
turned back into floats), so its probabilities match the Keras model's to about 1e-6.

:class:`OnnxNetwork` has the one method prediction calls (``predict_on_batch``) and the
model's ``input_shape`` and ``name``, so ``predict.predict_case`` runs it like a Keras model.
"""

from __future__ import annotations

import gc
import os
import tempfile
import warnings
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from liverseg_helpers.atomic import atomic_file, write_json_atomic
from liverseg_helpers.data.download import hash_file
from liverseg_helpers.errors import DataError, ModelFileError
from liverseg_helpers.inference.precision import cpu_has_vnni
from liverseg_helpers.training.sidecar import read_sidecar, sidecar_path

CACHE_ENV = "LIVERSEG_ONNX_CACHE"
ONNX_RUNTIMES = ("onnx", "onnx-int8")  # float32 twins; int8 twins (onnx_int8)
RUNTIMES = ("auto", "keras", *ONNX_RUNTIMES)
FIRST_MEMBER = "member_1"  # the first network of a file that averages several


def cache_dir() -> Path:
    """Where ONNX twins are kept: ``$LIVERSEG_ONNX_CACHE``, else ``~/.cache/liverseg/onnx``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "liverseg" / "onnx")


def choose_runtime(runtime: str = "auto", fast: bool = False) -> str:
    """What runs the liver networks: ``"onnx"`` (their ONNX twins), ``"onnx-int8"`` (their
    int8 twins, ``onnx_int8``) or ``"keras"``.

    ``"auto"`` picks ONNX Runtime where the whole command is faster: on a CPU (no NVIDIA driver
    loaded: a GPU is Keras's), with ONNX Runtime, tf2onnx and TensorFlow installed (the first
    run exports the twins) and Keras on TensorFlow. That holds on CPUs with bfloat16 hardware
    too, where Keras computes in bfloat16: its networks are faster there, but not by the
    seconds that importing TensorFlow costs. On a CPU with VNNI instructions (where it was
    measured) the int8 twins run the default pair (their masks within 0.001 Dice of the float32
    twins', the command about 0.65 of the time), and the float32 twins run ``fast`` (one
    network, where int8 saves too little of the command's time to be worth its rounding); a
    CPU without VNNI (AVX2 only), where int8 gains less and was not measured, keeps float32.
    The rules and their measurements: docs/real_ct_experiments.md, "The liver networks in ONNX
    Runtime" and "Int8 arithmetic in ONNX Runtime".

    Raises:
        DataError: An unknown runtime.
    """
    if runtime not in RUNTIMES:
        raise DataError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if runtime != "auto":
        return runtime
    installed = all(find_spec(name) for name in ("onnxruntime", "tf2onnx", "tensorflow"))
    on_tensorflow = os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow"
    gpu = Path("/proc/driver/nvidia").exists()
    if not (installed and on_tensorflow and not gpu):
        return "keras"
    return "onnx-int8" if cpu_has_vnni() and not fast else "onnx"


def onnxruntime_or_error() -> Any:
    """The ``onnxruntime`` module, or a ModelFileError that says how to install it."""
    try:
        import onnxruntime
    except ImportError as err:
        raise ModelFileError(
            "--runtime onnx needs ONNX Runtime and tf2onnx: pip install -e '.[onnx]'"
        ) from err
    return onnxruntime


class OnnxNetwork:
    """An exported network in an ONNX Runtime session, called like a Keras model to predict.

    Args:
        path: The ``.onnx`` file.
        name: A name for messages (the Keras model's name).

    Raises:
        ModelFileError: ONNX Runtime missing, or a file it cannot read (truncated, not ONNX).
    """

    def __init__(self, path: str | os.PathLike, name: str | None = None) -> None:
        runtime = onnxruntime_or_error()
        self.path = Path(path)
        self.name = name or self.path.stem
        try:
            self.session = runtime.InferenceSession(
                str(self.path), providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # noqa: BLE001 - ONNX Runtime raises its own error classes
            raise ModelFileError(
                f"{self.path}: ONNX Runtime cannot read it ({err}); delete it to export it again"
            ) from err
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.input_shape = (None, *first.shape[1:])

    def predict_on_batch(self, images: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, S, S, 1)`` of slices ``(n, S, S, C)``, as Keras returns them."""
        feed = {self.input_name: np.asarray(images, dtype=np.float32)}
        return self.session.run(None, feed)[0]


def load_network(path: Path, sidecar: dict | None = None) -> Any:
    """A model file ready to predict: an ``.onnx`` twin in ONNX Runtime (named after the file
    its ``sidecar`` says it was exported from), a ``.keras`` file with Keras (without its loss
    and optimizer state, which prediction does not need)."""
    if path.suffix == ".onnx":
        return OnnxNetwork(path, (sidecar or {}).get("exported_from"))
    from liverseg_helpers.training import model_files  # lazy: imports TensorFlow

    return model_files.load_model(path, compile=False)


def twin_path(
    model_path: str | os.PathLike, first_member: bool = False, sidecar: dict | None = None
) -> Path:
    """The cache path of a model file's ONNX twin, named by the file's SHA-256 (from its
    ``sidecar`` when the caller has read it, ``read_sidecar`` having checked that hash)."""
    model_path = Path(model_path)
    sidecar = (read_sidecar(model_path) if sidecar is None else sidecar) or {}
    digest = sidecar.get("model_sha256") or hash_file(model_path, "sha256", progress=False)
    part = f"-{FIRST_MEMBER}" if first_member else ""
    return cache_dir() / f"{model_path.stem}-{digest[:16]}{part}.onnx"


def averaged_members(model: Any) -> list:
    """The networks of a model that averages several (``research.ensemble.average_models``:
    an input, the networks ``member_1`` ... ``member_k``, then their ``mean``), else ``[]``."""
    layers = list(getattr(model, "layers", []))
    members = [layer for layer in layers if layer.name.startswith("member_")]
    averages = bool(layers) and layers[-1].name == "mean" and len(layers) == len(members) + 2
    return members if averages and len(members) > 1 else []


def export_network(model: Any, path: Path) -> None:
    """Export one Keras network to an ONNX file (tf2onnx, through ``model.export``)."""
    model(np.zeros((1, *model.input_shape[1:]), dtype="float32"))  # export wants a called model
    model.export(str(path), format="onnx", verbose=False)


def export_average(members: list, path: Path) -> None:
    """Export each network on its own, then join them in one ONNX graph that feeds them the
    same input and averages their outputs (as Keras's ``Average`` does: a sum, times 1/k).

    The averaged Keras model exported whole took 7.5 GB of memory for the shipped axial file
    (three networks: tf2onnx holds several copies of the whole graph); one network at a time
    takes what one network's export takes (2.3 GB).
    """
    import onnx
    from onnx import compose, helper, numpy_helper

    parts = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        for index, member in enumerate(members, 1):
            export_network(member, Path(tmp_dir) / f"{index}.onnx")
            part = onnx.load(str(Path(tmp_dir) / f"{index}.onnx"))
            parts.append(compose.add_prefix(part, f"{member.name}/"))
            gc.collect()  # the export's copies of the graph, before the next network's
    first = parts[0].graph
    image = onnx.ValueInfoProto()
    image.CopyFrom(first.input[0])
    image.name = "image"
    nodes, weights = [], []
    for part in parts:
        own_input = part.graph.input[0].name
        for node in part.graph.node:
            node.input[:] = ["image" if name == own_input else name for name in node.input]
        nodes += part.graph.node
        weights += part.graph.initializer
    total = parts[0].graph.output[0].name
    for index, part in enumerate(parts[1:], 2):
        nodes.append(helper.make_node("Add", [total, part.graph.output[0].name], [f"sum_{index}"]))
        total = f"sum_{index}"
    weights.append(numpy_helper.from_array(np.array(1 / len(parts), np.float32), "one_over_k"))
    nodes.append(helper.make_node("Mul", [total, "one_over_k"], ["probs"]))
    probs = onnx.ValueInfoProto()
    probs.CopyFrom(first.output[0])
    probs.name = "probs"
    graph = helper.make_graph(nodes, "average", [image], [probs], weights)
    joined = helper.make_model(
        graph, opset_imports=parts[0].opset_import, ir_version=parts[0].ir_version
    )
    onnx.checker.check_model(joined)
    onnx.save(joined, str(path))


def export_twin(model_path: str | os.PathLike, out: Path, first_member: bool = False) -> Path:
    """Export a ``.keras`` file (or its first network) to ONNX at ``out``, with its sidecar.

    The ``.onnx`` file is written atomically and its sidecar (the model's, with the twin's
    SHA-256) after it, so a stop in between leaves no twin that would be read.

    Raises:
        ModelFileError: The model cannot be loaded or exported (tf2onnx missing).
    """
    onnxruntime_or_error()
    from liverseg_helpers.training import model_files  # imports TensorFlow: once per model

    model = model_files.load_model(model_path, compile=False)
    names = {layer.name for layer in getattr(model, "layers", [])}
    if first_member and FIRST_MEMBER in names:
        model = model.get_layer(FIRST_MEMBER)
    members = averaged_members(model)
    try:
        with atomic_file(out) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # tf2onnx's NumPy 2 shims
            if members:
                export_average(members, tmp)
            else:
                export_network(model, tmp)
            digest = hash_file(tmp, "sha256", progress=False)
    except ImportError as err:
        raise ModelFileError(f"{model_path}: exporting to ONNX needs tf2onnx ({err})") from err
    sidecar = {**(read_sidecar(model_path) or {}), "model_sha256": digest}
    sidecar["exported_from"] = Path(model_path).name
    write_json_atomic(sidecar, sidecar_path(out))
    return out


def twin_ready(path: Path) -> bool:
    """Whether a cached twin is whole: its file and its sidecar, which is written after it."""
    return path.exists() and sidecar_path(path).exists()


def onnx_twin(
    model_path: str | os.PathLike,
    first_member: bool = False,
    log: Callable[[str], object] | None = None,
    sidecar: dict | None = None,
) -> Path:
    """The ONNX twin of a model file (``first_member``: of its first network), exported the
    first time it is asked for (saying so to ``log``); a twin without its sidecar is exported
    again. An ``.onnx`` file given as the model is its own twin. ``sidecar``: the model's,
    when the caller has read it (:func:`twin_path`)."""
    if Path(model_path).suffix == ".onnx":
        return Path(model_path)
    path = twin_path(model_path, first_member, sidecar)
    if not twin_ready(path):
        if log is not None:
            log(f"exporting {Path(model_path).name} to ONNX once, for later runs: {path}")
        export_twin(model_path, path, first_member)
    return path
