"""The liver networks' int8 twins (``--runtime onnx-int8``) against their float32 twins.

For the shipped pair as ``liverseg predict`` runs it, and for ``--fast``'s one network, each CT
is predicted both ways in one process, alternating: by the int8 twins
(``inference.onnx_int8``, made first if the cache lacks them; how long that took is printed)
and by the float32 twins (``inference.onnx_model``). Prints, per CT, the networks' seconds of
each way (best of ``--repeat``), their ratio, the Dice between the two final masks, the largest
change of a probability, and each way's liver Dice and ASSD against the expert mask; then the
medians. ``benchmarks/predict_command.py --mode "int8=--runtime onnx-int8"`` times whole
commands. An experiment, not a test: read the ratio and the Dice.

Usage::

    python benchmarks/onnx_int8.py [CT ...] [--repeat 1]

Without CTs: every real patient of ``../shared/data``, or a DICOM phantom when it is absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from skip_slices import SHIPPED, add_ct_arguments, compare_pair_and_fast  # noqa: E402

from liverseg_helpers.inference import onnx_int8, onnx_model, pipeline  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_ct_arguments(parser)
    args = parser.parse_args(argv)
    twins = [onnx_model.onnx_twin(path) for path in SHIPPED]
    start = time.perf_counter()
    int8_twins = [onnx_int8.int8_twin(path, log=print) for path in SHIPPED]
    int8_net, settings = pipeline.first_axial_network(SHIPPED, runtime="onnx-int8", log=print)
    print(f"int8 twins ready in {time.perf_counter() - start:.1f} s")
    float_net, _ = pipeline.first_axial_network(SHIPPED, runtime="onnx")
    pair = {
        "int8": {"models": int8_twins, "precision": "float32"},
        "float32": {"models": twins, "precision": "float32"},
    }
    fast = {
        "int8": {"models": int8_net, "precision": "float32"},
        "float32": {"models": float_net, "precision": "float32"},
    }
    compare_pair_and_fast(args.ct, args.repeat, pair, fast, settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
