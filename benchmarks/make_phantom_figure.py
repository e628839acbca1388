"""Make the README figure: slices of a synthetic phantom patient, liver outlined.

Usage (from the repo root)::

    python benchmarks/make_phantom_figure.py [--seed 1] [--out FIGURE.png] [--real CASE]

``--real CASE`` adds a row of a real patient (e.g. ``../shared/data/3Dircadb1/3Dircadb1.1``)
for a look on your own machine. Such a figure shows patient data, whose licence may forbid
adapted copies (3D-IRCADb does), so it goes to the git-ignored ``runs/`` by default and is never
committed: the repository's figure shows the phantom only.

Also prints how long generating and writing a 3-patient cohort takes, the number quoted in
the docs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from liverseg_helpers.data import phantom  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WINDOW_HU = (50 - 200, 50 + 200)  # W400 / L50, the usual liver window


def pick_slices(liver: np.ndarray) -> list[int]:
    """A slice in the lower third, the middle and near the top of the liver."""
    slices = np.flatnonzero(liver.any(axis=(1, 2)))
    return [int(np.percentile(slices, q)) for q in (25, 55, 90)]


def show(ax, image_hu: np.ndarray, liver2d: np.ndarray, title: str) -> None:
    ax.imshow(image_hu, cmap="gray", vmin=WINDOW_HU[0], vmax=WINDOW_HU[1])
    ax.contour(liver2d, [0.5], colors="tab:red", linewidths=0.8)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", help="PNG to write (default: the repository's figure)")
    parser.add_argument("--real", type=Path, help="a real patient to show below the phantom")
    args = parser.parse_args()
    if args.out is None:
        args.out = REPO / (
            "runs/phantom_vs_real.png" if args.real else "notebooks/figures/phantom.png"
        )

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        phantom.write_phantom_cohort(tmp, 3, seed=42, n_slices=64, size=256)
    print(
        f"3 patients, 64 x 256 x 256, generated and written in {time.perf_counter() - start:.1f} s"
    )

    case = phantom.make_phantom_case(args.seed, n_slices=96, size=512)
    rows = [("phantom", case)]
    if args.real:
        from liverseg_helpers import io

        rows.append((f"real CT {args.real.name}", io.load_case(args.real)))

    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3.1 * len(rows)), squeeze=False)
    for row, (name, shown) in zip(axes, rows, strict=True):
        liver = shown.masks["liver"]
        for ax, index in zip(row, pick_slices(liver), strict=True):
            z_mm = index * shown.spacing_mm[0]
            show(ax, shown.volume[index], liver[index], f"{name}, z = {z_mm:.0f} mm")
    title = "Synthetic phantom vs real CT" if args.real else "Synthetic phantom patient"
    fig.suptitle(f"{title} (W400/L50, liver outlined in red)", fontsize=10)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_png = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp_png, dpi=80, pil_kwargs={"optimize": True})
    tmp_png.replace(out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
