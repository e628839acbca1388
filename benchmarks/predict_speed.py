"""End-to-end speed of ``liverseg predict`` on a whole 512x512 CT with the paper's UNet.

Target: under 15 s from reading the DICOM series to the written mask, on a 2-core CPU.

Input: patient 3Dircadb1.1 (129 slices) from ``../shared/data`` when present, otherwise a
512x512 phantom of 120 slices written as DICOM in a temporary folder. The model is an
untrained paper UNet (256x256 input, 32 base filters, 7.8 M parameters): weights do not change
the speed. Prints the time of each stage and, last, one JSON line.

Usage::

    python benchmarks/predict_speed.py [--batch-size 16] [--input PATIENT] [--repeat 1]
        [--precision auto|float32|bfloat16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
REAL_PATIENT = REPO.parent / "shared" / "data" / "3Dircadb1" / "3Dircadb1.1"


def find_input(tmp_dir: Path, requested: str | None) -> tuple[Path, str]:
    """The patient to segment: requested, real 3D-IRCADb, or a DICOM phantom."""
    if requested:
        return Path(requested), "given"
    if REAL_PATIENT.exists():
        return REAL_PATIENT, "3Dircadb1.1"
    from liverseg_helpers.data import phantom

    paths = phantom.write_phantom_cohort(tmp_dir / "cohort", 1, n_slices=120, size=512)
    return paths[0], "phantom 120x512x512"


def run_once(
    input_path: Path, model_path: Path, out_path: Path, batch_size: int, precision: str
) -> dict:
    """One full prediction, timed stage by stage (seconds)."""
    from liverseg_helpers import io
    from liverseg_helpers.inference import predict
    from liverseg_helpers.io import mask_output

    times: dict[str, float] = {}
    start = time.perf_counter()
    case = io.load_case(input_path)
    times["read"] = time.perf_counter() - start
    t = time.perf_counter()
    model, settings = predict.load_prediction_model(model_path)
    times["load_model"] = time.perf_counter() - t
    result = predict.predict_case(
        model, case, settings=settings, batch_size=batch_size, precision=precision
    )
    times.update(result.stage_seconds)
    t = time.perf_counter()
    mask_output.write_prediction(result.pred, case, out_path, overwrite=True)
    times["write"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - start
    times["shape"] = list(case.shape)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16, help="slices per model call")
    parser.add_argument("--input", default=None, help="patient folder / DICOM series / NIfTI")
    parser.add_argument("--repeat", type=int, default=1, help="runs (the best is reported)")
    parser.add_argument("--precision", default="auto", help="auto, float32 or bfloat16")
    args = parser.parse_args(argv)

    from liverseg_helpers.inference import precision
    from liverseg_helpers.preparation.preprocess import PreprocessSettings
    from liverseg_helpers.training import model as model_lib
    from liverseg_helpers.training import model_files

    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        input_path, input_name = find_input(tmp_dir, args.input)
        net = model_lib.build_unet((256, 256, 1), base_filters=32, depth=4)
        model_path = model_files.save_model(net, tmp_dir / "paper_unet.keras", PreprocessSettings())
        runs = [
            run_once(
                input_path, model_path, tmp_dir / "pred.nii.gz", args.batch_size, args.precision
            )
            for _ in range(args.repeat)
        ]
    best = min(runs, key=lambda r: r["total"])
    stages = ("read", "load_model", "preprocess", "model", "resize", "postprocess", "write")
    for name in stages:
        print(f"{name:<12} {best[name]:7.2f} s")
    print(f"{'total':<12} {best['total']:7.2f} s  (target < 15 s)")
    report = {
        "benchmark": "predict_speed",
        "input": input_name,
        "shape": best["shape"],
        "batch_size": args.batch_size,
        "precision": precision.choose_precision(args.precision),
        "params": int(net.count_params()),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "seconds": {k: round(best[k], 3) for k in (*stages, "total")},
        "all_totals": [round(r["total"], 3) for r in runs],
        "under_target": best["total"] < 15.0,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
