"""Running each network only on the slices that need it (``inference.region``) against every slice.

For every CT, the shipped ensemble (3 axial + 3 coronal networks) predicts it twice in one
process, in alternating order: with ``skip_slices=True`` (the default of ``liverseg predict``:
one run for all blank slices; the axial networks on a first batch holding the scan's ends, then
only on the slices around the coronal networks' liver) and with ``skip_slices=False`` (every
network on every slice, the axial ones first). Prints, per CT, the networks' seconds
(``stage_seconds["model"]``) of each, their ratio, the Dice between the two final masks, the
largest change of a probability, and the liver Dice and ASSD of each against the expert mask,
then the medians. An experiment, not a test: the machine's noise moves the seconds, so read
the ratio, measured side by side.

Usage::

    python benchmarks/skip_slices.py [CT ...] [--repeat 1]

Without CTs: every real patient of ``../shared/data``, or a DICOM phantom when it is absent
(``predict_command.default_inputs``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS.parent))
sys.path.insert(0, str(BENCHMARKS))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from predict_command import default_inputs  # noqa: E402

from liverseg_helpers import io  # noqa: E402
from liverseg_helpers.evaluation import evaluate  # noqa: E402
from liverseg_helpers.inference import pipeline, predict  # noqa: E402
from liverseg_helpers.research.ablation_table import format_markdown  # noqa: E402

SHIPPED = pipeline.resolve_model_paths(None)


def compare(path: Path, repeat: int) -> dict:
    """Both ways on one CT: model seconds (best of ``repeat``), agreement and accuracy."""
    case = io.load_case(path)
    seconds: dict[bool, list[float]] = {True: [], False: []}
    results = {}
    for run in range(repeat):
        for skip in (True, False) if run % 2 == 0 else (False, True):
            result = predict.predict_case(SHIPPED, case, skip_slices=skip)
            seconds[skip].append(result.stage_seconds["model"])
            results[skip] = result
    row = {
        "patient": case.case_id,
        "slices": case.shape[0],
        "skipping s": min(seconds[True]),
        "every slice s": min(seconds[False]),
        "ratio": min(seconds[True]) / min(seconds[False]),
        "mask Dice between": evaluate.evaluate_masks(
            results[True].pred, results[False].pred, case.spacing_mm
        )["dice"],
        "max prob change": float(np.abs(results[True].probs - results[False].probs).max()),
    }
    truth = case.masks.get("liver")
    for skip, name in ((True, "skipping"), (False, "every slice")):
        if truth is not None and truth.any():
            scores = evaluate.evaluate_masks(results[skip].pred, truth, case.spacing_mm)
            row[f"{name} Dice"] = scores["dice"]
            row[f"{name} ASSD mm"] = scores["assd_mm"]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ct", nargs="*", type=Path, help="CTs (default: ../shared/data)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each way per CT")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp_dir:
        paths = args.ct or default_inputs(Path(tmp_dir))
        rows = [compare(path, args.repeat) for path in paths]
    for row in rows:  # a line per CT as soon as the table is known
        print({key: round(v, 4) if isinstance(v, float) else v for key, v in row.items()})
    print(format_markdown(pd.DataFrame(rows).set_index("patient"), digits=4))
    for key in ("skipping s", "every slice s", "ratio", "mask Dice between"):
        print(f"median {key}: {np.median([row[key] for row in rows]):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
