"""The liver networks in ONNX Runtime (``--runtime onnx``) against Keras, on the same CTs.

For the shipped pair as ``liverseg predict`` runs it, and for ``--fast``'s one network, each CT
is predicted both ways in one process, alternating: by the networks' ONNX twins
(``inference.onnx_model``, exported first if the cache lacks them) and by the Keras models.
Prints, per CT, the networks' seconds of each way (best of ``--repeat``), their ratio, the Dice
between the two final masks, the largest change of a probability, and each way's liver Dice
and ASSD against the expert mask; then the medians. The seconds here leave out what the
command saves most, importing TensorFlow: ``benchmarks/predict_command.py --mode
"onnx=--runtime onnx"`` times whole commands. An experiment, not a test: read the ratio.

Usage::

    python benchmarks/onnx_runtime.py [CT ...] [--repeat 1]

Without CTs: every real patient of ``../shared/data``, or a DICOM phantom when it is absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from skip_slices import SHIPPED, add_ct_arguments, compare_pair_and_fast  # noqa: E402

from liverseg_helpers.inference import pipeline  # noqa: E402


def runtime_ways(runtime: str) -> tuple[dict, dict, object]:
    """``predict_case`` keyword arguments of the shipped pair and of ``--fast``'s network on
    one runtime (``"keras"``, ``"onnx"`` or ``"onnx-int8"``; twins made first if need be),
    and ``--fast``'s settings."""
    if runtime == "keras":
        network, settings = pipeline.first_axial_network(SHIPPED)
        return {}, {"models": network}, settings
    twins = [pipeline.twin_maker(runtime)(path, log=print) for path in SHIPPED]
    network, settings = pipeline.first_axial_network(SHIPPED, runtime=runtime, log=print)
    return (
        {"models": twins, "precision": "float32"},
        {"models": network, "precision": "float32"},
        settings,
    )


def compare_runtimes(argv: list[str] | None, doc: str, runtimes: dict[str, str]) -> int:
    """Parse a benchmark's arguments, then compare two runtimes (``{label: runtime}``, the new
    one first) for the pair and for ``--fast``, printing how long each took to get ready."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    add_ct_arguments(parser)
    args = parser.parse_args(argv)
    pair, fast = {}, {}
    for label, runtime in runtimes.items():
        start = time.perf_counter()
        pair[label], fast[label], found = runtime_ways(runtime)
        settings = found  # the same for both: the shipped axial file's
        print(f"{label} ({runtime}) ready in {time.perf_counter() - start:.1f} s")
    compare_pair_and_fast(args.ct, args.repeat, pair, fast, settings)
    return 0


def main(argv: list[str] | None = None) -> int:
    return compare_runtimes(argv, __doc__, {"onnx": "onnx", "keras": "keras"})


if __name__ == "__main__":
    raise SystemExit(main())
