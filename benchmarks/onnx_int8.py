"""The liver networks' int8 twins (``--runtime onnx-int8``) against their float32 twins.

For the shipped pair as ``liverseg predict`` runs it, and for ``--fast``'s one network, each CT
is predicted both ways in one process, alternating: by the int8 twins
(``inference.onnx_int8``, made first if the cache lacks them; how long each way took to get
ready is printed)
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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from onnx_runtime import compare_runtimes  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return compare_runtimes(argv, __doc__, {"int8": "onnx-int8", "float32": "onnx"})


if __name__ == "__main__":
    raise SystemExit(main())
