"""How far apart the copy check of ``--train-extra`` puts different patients and copies.

``leakcheck.same_scan`` calls two scans of one shape and voxel size the same scan when their
HU histograms differ by less than ``leakcheck.HISTOGRAM_TOLERANCE`` (L1 distance of the
fractions). This script prints, for the cases of one or more cohort folders:

* the smallest and largest distance between two different patients of one shape and voxel
  size (the pairs the check could confuse), and how many such pairs there are;
* the largest distance between a case and a turned copy of it (flipped head-feet and
  left-right, rows and columns swapped, in memory), which must stay under the tolerance.

Usage::

    python benchmarks/leakcheck_margin.py runs/cv/phantom_masses_lobe ../shared/data/3Dircadb1
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import replace

from liverseg_helpers import io
from liverseg_helpers.research import leakcheck


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cohorts", nargs="+", help="cohort folders")
    args = parser.parse_args()
    paths = [p for folder in args.cohorts for p in io.list_case_paths(folder)]
    prints, copy_distances = [], []
    for path in paths:
        case = io.load_case(path)
        found = leakcheck.fingerprint(case)
        turned = replace(case, volume=case.volume[::-1, :, ::-1].transpose(0, 2, 1))
        copy_distances.append(leakcheck.histogram_distance(found, leakcheck.fingerprint(turned)))
        prints.append(found)
    alike = [
        leakcheck.histogram_distance(a, b)
        for a, b in itertools.combinations(prints, 2)
        if a.shape == b.shape and a.spacing_mm == b.spacing_mm
    ]
    print(f"{len(paths)} cases; tolerance {leakcheck.HISTOGRAM_TOLERANCE}")
    if alike:
        print(
            f"different patients of one shape and voxel size: {len(alike)} pairs, "
            f"distance {min(alike):.3f} to {max(alike):.3f}"
        )
    else:
        print("no two patients share a shape and voxel size")
    print(f"turned copies: largest distance {max(copy_distances):.3f}")


if __name__ == "__main__":
    main()
