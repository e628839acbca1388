"""The axial networks on slices at most 3.2 mm apart (``region.AXIAL_STEP_MM``) against every slice.

On a CT of thin slices (3D-IRCADb: 1.6 mm) an axial network may look at every second slice
only, and the probabilities of the slices between are drawn along z from their two neighbours
(``inference.region.predict_thinned``). This prints, per CT, for the shipped pair as
``liverseg predict`` runs it and for ``--fast``'s one network, the networks' seconds of each
way (best of ``--repeat``, measured side by side in one process, alternating), their ratio,
the Dice between the two final masks, the largest change of a probability, and each way's liver
Dice and ASSD against the expert mask; then the medians. CTs of slices 2 mm or thicker are the
same both ways (step 1). An experiment, not a test: read the ratio, not the seconds.

Usage::

    python benchmarks/axial_step.py [CT ...] [--repeat 1] [--step-mm 3.2]

Without CTs: every real patient of ``../shared/data``, or a DICOM phantom when it is absent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from skip_slices import SHIPPED, add_ct_arguments, compare_pair_and_fast  # noqa: E402

from liverseg_helpers.inference import pipeline, region  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_ct_arguments(parser)
    parser.add_argument("--step-mm", type=float, default=region.AXIAL_STEP_MM)
    args = parser.parse_args(argv)
    ways = {
        f"step {args.step_mm:g} mm": {"axial_step_mm": args.step_mm},
        "every slice": {"axial_step_mm": 0.0},
    }
    fast_model, fast_settings = pipeline.first_axial_network(SHIPPED)
    fast_ways = {name: {**way, "models": fast_model} for name, way in ways.items()}
    compare_pair_and_fast(args.ct, args.repeat, ways, fast_ways, fast_settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
