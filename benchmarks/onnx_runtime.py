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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from skip_slices import SHIPPED, add_ct_arguments, compare_pair_and_fast  # noqa: E402

from liverseg_helpers.inference import onnx_model, pipeline  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_ct_arguments(parser)
    args = parser.parse_args(argv)
    twins = [onnx_model.onnx_twin(path) for path in SHIPPED]
    pair = {"onnx": {"models": twins, "precision": "float32"}, "keras": {}}
    keras_net, settings = pipeline.first_axial_network(SHIPPED)
    onnx_net, _ = pipeline.first_axial_network(SHIPPED, runtime="onnx")
    fast = {
        "onnx": {"models": onnx_net, "precision": "float32"},
        "keras": {"models": keras_net},
    }
    compare_pair_and_fast(args.ct, args.repeat, pair, fast, settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
