"""The ablation table of :mod:`liverseg_helpers.research.crossval`: one row per training recipe.

Rows come from the ``metrics.json`` of every finished fold, so a table written after a run of
one variant still lists the variants run before it in the same folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from liverseg_helpers.research.variants import VARIANTS, Variant


def read_finished_rows(out_dir: Path) -> list[dict]:
    """Rows of every finished fold under ``out_dir`` (so the ablation covers earlier runs)."""
    rows = []
    for name in VARIANTS:
        for path in sorted((out_dir / name).glob("fold_*/metrics.json")):
            rows.append(json.loads(path.read_text()))
    return rows


def summarise_ablation(per_fold: pd.DataFrame, variants: dict[str, Variant]) -> pd.DataFrame:
    """One row per variant: per-fold Dice and ASSD, means, and training minutes.

    Args:
        per_fold: Rows of ``crossval.run_fold``.
        variants: The variants (for the ``change`` text), in table order.

    Returns:
        DataFrame indexed by variant with ``change``, ``dice_<case>``, ``assd_mm_<case>``,
        ``dice_mean``, ``assd_mm_mean``, ``dice_raw_mean`` (no post-processing),
        ``train_min`` (all folds) columns.
    """
    rows = []
    for name in [n for n in variants if n in set(per_fold["variant"])]:
        part = per_fold[per_fold["variant"] == name].set_index("case_id")
        row = {"variant": name, "change": variants[name].change}
        for case_id in part.index:
            row[f"dice_{case_id}"] = part.loc[case_id, "dice"]
            row[f"assd_mm_{case_id}"] = part.loc[case_id, "assd_mm"]
        row["dice_mean"] = part["dice"].mean()
        row["assd_mm_mean"] = part["assd_mm"].mean()
        row["dice_raw_mean"] = part["raw_dice"].mean()
        row["train_min"] = part["train_s"].sum() / 60.0
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant")


def format_markdown(df: pd.DataFrame, digits: int = 3) -> str:
    """A table as GitHub markdown (no extra dependency: pandas' to_markdown needs tabulate)."""
    columns = [df.index.name or ""] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for index, values in df.iterrows():
        cells = [str(index)]
        for value in values:
            is_number = isinstance(value, float)
            cells.append(f"{value:.{digits}f}" if is_number else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
