"""Wall time of the whole ``liverseg predict`` command with the shipped models, start-up included.

Target: a whole 512x512 CT in under 20 s on 2 CPU cores, from starting Python to the written
mask (what a user waits for). Each run is a fresh process, as a user would start it:
``python -m liverseg_helpers.cli predict INPUT --out OUT``, timed from outside, with its peak
memory from the operating system (``os.wait4``).

With ``--with-fast`` each run is followed by the same command with ``--fast`` (one network
instead of the averaged ensemble), so the two are timed side by side on the same host, and the
ratio of their medians is printed. Each ``--mode NAME=OPTIONS`` adds one more way of running
it, in the same turn (e.g. ``--axial-step-mm 3.2``).

Input: the CTs given, or every real patient under ``../shared/data`` (3D-IRCADb, CHAOS,
HCC-TACE-Seg) when present, otherwise a 512x512 phantom of 120 slices written as DICOM
(``predict_speed.find_input``). Prints one row per run and, last, one JSON line.

Usage::

    python benchmarks/predict_command.py [INPUT ...] [--repeat 2] [--target 20] [--with-fast]
        [--mode NAME=OPTIONS ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCHMARKS))
SOURCES = ("3Dircadb1", "chaos_ct", "hcc_tace_seg")


def default_inputs(tmp_dir: Path) -> list[Path]:
    """Every real patient of ``../shared/data``, or one DICOM phantom when it is absent."""
    from predict_speed import find_input

    from liverseg_helpers.research.crossval import real_case_paths

    shared = REPO.parent / "shared" / "data"
    found = [shared / name for name in SOURCES if (shared / name).is_dir()]
    if found:
        return real_case_paths(found)
    return [find_input(tmp_dir, None)[0]]


def time_command(input_path: Path, out_path: Path, options: tuple[str, ...] = ()) -> dict:
    """One ``liverseg predict`` process: wall seconds, peak memory (MB) and its "wrote" line.

    Raises:
        RuntimeError: The command failed (its last output lines are in the message).
    """
    command = [sys.executable, "-m", "liverseg_helpers.cli", "predict", str(input_path)]
    command += ["--out", str(out_path), "--overwrite", *options]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        log.seek(0)
        lines = log.read().decode(errors="replace").splitlines()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({code}):\n" + "\n".join(lines[-20:]))
    return {
        "seconds": seconds,
        "peak_mb": usage.ru_maxrss / 1024,  # kilobytes on Linux
        "report": next((line for line in lines if line.startswith("wrote ")), ""),
    }


def summary(rows: list[dict], target: float) -> dict:
    """Median and slowest seconds of some runs, and whether the slowest is under ``target``."""
    seconds = [row["seconds"] for row in rows]
    return {
        "median_s": round(statistics.median(seconds), 2),
        "slowest_s": round(max(seconds), 2),
        "under_target": max(seconds) < target,
    }


def main(argv: list[str] | None = None) -> int:
    from liverseg_helpers.inference.precision import cpu_has_bfloat16

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="*", help="CT folders / files (default: see above)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per input")
    parser.add_argument("--target", type=float, default=20.0, help="seconds per CT")
    parser.add_argument("--with-fast", action="store_true", help="also time --fast, in turn")
    parser.add_argument(
        "--mode",
        action="append",
        default=[],
        metavar="NAME=OPTIONS",
        help="also time the command with these options, in turn "
        "(e.g. 'fast_step=--fast --axial-step-mm 3.2'); repeatable",
    )
    args = parser.parse_args(argv)
    modes = {"ensemble": ()} | ({"fast": ("--fast",)} if args.with_fast else {})
    modes |= {name: tuple(opts.split()) for name, opts in (m.split("=", 1) for m in args.mode)}

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        inputs = [Path(p) for p in args.inputs] or default_inputs(tmp_dir)
        for input_path in inputs:
            for run in range(1, args.repeat + 1):
                for mode, options in modes.items():
                    result = time_command(input_path, tmp_dir / "pred.nii.gz", options)
                    rows.append({"input": input_path.name, "mode": mode, "run": run, **result})
                    print(
                        f"{input_path.name:<14} {mode:<8} run {run}: {result['seconds']:6.1f} s, "
                        f"peak {result['peak_mb']:6.0f} MB  | {result['report']}",
                        flush=True,
                    )
    by_mode = {mode: summary([r for r in rows if r["mode"] == mode], args.target) for mode in modes}
    for mode, stats in by_mode.items():
        print(
            f"{mode}: median {stats['median_s']:.1f} s, slowest {stats['slowest_s']:.1f} s "
            f"(target < {args.target:.0f} s): {'under' if stats['under_target'] else 'OVER'}"
        )
    report = {
        "benchmark": "predict_command",
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "bfloat16_cpu": cpu_has_bfloat16(),
        "runs": [
            {k: v if isinstance(v, str | int) else round(v, 2) for k, v in row.items()}
            for row in rows
        ],
        **by_mode["ensemble"],
    }
    if args.with_fast:
        report["fast"] = by_mode["fast"]
        report["fast_over_ensemble_median"] = round(
            by_mode["fast"]["median_s"] / by_mode["ensemble"]["median_s"], 3
        )
        print(f"fast / ensemble, ratio of medians: {report['fast_over_ensemble_median']:.2f}")
    report |= {mode: by_mode[mode] for mode in modes if mode not in ("ensemble", "fast")}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
