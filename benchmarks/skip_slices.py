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


def compare(path: Path, repeat: int, ways: dict[str, dict], models=SHIPPED, **options) -> dict:
    """Two ways of predicting one CT (``predict_case`` keyword arguments per name, the first
    way the new one; a way's ``"models"`` replaces ``models``): model seconds (best of
    ``repeat``, alternating), agreement, accuracy."""
    case = io.load_case(path)
    new, old = ways
    seconds: dict[str, list[float]] = {new: [], old: []}
    results = {}
    for run in range(repeat):
        for name in (new, old) if run % 2 == 0 else (old, new):
            way = dict(ways[name])
            result = predict.predict_case(way.pop("models", models), case, **options, **way)
            seconds[name].append(result.stage_seconds["model"])
            results[name] = result
    row = {
        "patient": case.case_id,
        "slices": case.shape[0],
        f"{new} s": min(seconds[new]),
        f"{old} s": min(seconds[old]),
        "ratio": min(seconds[new]) / min(seconds[old]),
        "mask Dice between": evaluate.evaluate_masks(
            results[new].pred, results[old].pred, case.spacing_mm
        )["dice"],
        "max prob change": float(np.abs(results[new].probs - results[old].probs).max()),
    }
    truth = case.masks.get("liver")
    for name in (new, old):
        if truth is not None and truth.any():
            scores = evaluate.evaluate_masks(results[name].pred, truth, case.spacing_mm)
            row[f"{name} Dice"] = scores["dice"]
            row[f"{name} ASSD mm"] = scores["assd_mm"]
    return row


def print_rows(rows: list[dict]) -> None:
    """A line per CT, the markdown table, and the medians of seconds, ratio and agreement."""
    for row in rows:
        print({key: round(v, 4) if isinstance(v, float) else v for key, v in row.items()})
    print(format_markdown(pd.DataFrame(rows).set_index("patient"), digits=4))
    for key in [*list(rows[0])[2:5], "mask Dice between"]:
        print(f"median {key}: {np.median([row[key] for row in rows]):.4f}")


def add_ct_arguments(parser: argparse.ArgumentParser) -> None:
    """The CTs to compare on and the runs of each way, as every comparing benchmark takes them."""
    parser.add_argument("ct", nargs="*", type=Path, help="CTs (default: ../shared/data)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each way per CT")


def compare_pair_and_fast(
    cts: list[Path], repeat: int, pair_ways: dict, fast_ways: dict, fast_settings
) -> None:
    """Print :func:`compare`'s rows for the shipped pair, then for ``--fast``'s network (its
    ways name their ``"models"``), on ``cts`` (none: ``default_inputs``)."""
    with tempfile.TemporaryDirectory() as tmp_dir:
        paths = cts or default_inputs(Path(tmp_dir))
        for label, ways, options in (
            ("the shipped pair", pair_ways, {}),
            ("--fast (one axial network)", fast_ways, {"settings": fast_settings}),
        ):
            print(f"\n## {label}")
            print_rows([compare(path, repeat, ways, **options) for path in paths])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_ct_arguments(parser)
    args = parser.parse_args(argv)
    ways = {"skipping": {"skip_slices": True}, "every slice": {"skip_slices": False}}
    with tempfile.TemporaryDirectory() as tmp_dir:
        paths = args.ct or default_inputs(Path(tmp_dir))
        rows = [compare(path, args.repeat, ways) for path in paths]
    print_rows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
