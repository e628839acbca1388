"""The training recipes ("variants") compared by leave-one-patient-out cross-validation.

A variant is one recipe: loss, preprocessing, profile changes and the phantom patients added to
training. :data:`VARIANTS` is a ladder (each step makes one change to the one before it) plus
side branches, so the ablation table in :mod:`liverseg_helpers.research.crossval` shows what each
change contributed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from liverseg_helpers.data.phantom_anatomy import DEFAULT_ANATOMY, AnatomyOptions
from liverseg_helpers.research.start_file import START_FILE, ensure_start_file

REPO_ROOT = Path(__file__).resolve().parents[2]  # Variant.init_weights is relative to it


@dataclass(frozen=True)
class Variant:
    """One training recipe of the ablation.

    Attributes:
        name: Short name (folder name and table row).
        change: What this variant changes, in words (for the table).
        loss: Loss name for ``losses.get_loss``.
        preprocess: PreprocessSettings changes, e.g. ``{"target_spacing_mm": 2.0}``.
        overrides: Profile changes, e.g. ``{"context_slices": 1}``.
        phantom_train: Phantom patients added to the training set (``phantom_002`` ...).
        anatomy: Harder phantom anatomy (``phantom_anatomy.AnatomyOptions``); such phantoms
            live in their own folders, e.g. ``phantom_masses/``.
        real_repeat: Times each real training patient's slices are shown per epoch (the
            phantoms once), so scarce real CT is not outnumbered by synthetic CT.
        batch_norm: Batch normalisation after each convolution (``TrainConfig.batch_norm``;
            None: the paper's UNet, without it, for the liver).
        init_weights: Start each run from this network (``TrainConfig.init_weights``), a path
            relative to the repository root such as ``models/liver_unet.keras:member_1``;
            None: from random weights. The former shipped file (``start_file.START_FILE``)
            is restored from git history when a run needs it.
    """

    name: str
    change: str
    loss: str = "dice"
    preprocess: dict = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)
    phantom_train: int = 0
    anatomy: AnatomyOptions = DEFAULT_ANATOMY
    real_repeat: int = 1
    batch_norm: bool | None = None
    init_weights: str | None = None

    @property
    def init_weights_path(self) -> str | None:
        """``init_weights`` with the repository root in front (None: random weights)."""
        if not self.init_weights:
            return None
        if self.init_weights.startswith(START_FILE + ":"):
            ensure_start_file(REPO_ROOT)
        return str(REPO_ROOT / self.init_weights)

    @property
    def cohort_suffix(self) -> str:
        """Suffix of this variant's phantom, cohort and slice-cache folders."""
        return self.anatomy.suffix


def _ladder() -> dict[str, Variant]:
    # Dice + BCE from the start: with Dice loss alone the first real-data run collapsed to an
    # empty prediction at epoch 3 (loss 0.9998); the "dice_loss" variant measures the loss.
    steps = [
        ("baseline", "2D, whole slice resized to 128 px, Dice + BCE loss, augmentation", {}),
        ("spacing", "+ in-plane resampling to 2.5 mm", {"preprocess": {"target_spacing_mm": 2.5}}),
        (
            "context",
            "+ 2.5D: 1 slice of context on each side",
            {"overrides": {"context_slices": 1}},
        ),
    ]
    variants: dict[str, Variant] = {}

    def vary(name: str, base: str, change: str, overrides: dict | None = None, **fields) -> None:
        """Add ``variants[name]``: ``variants[base]`` with ``overrides`` merged into its profile
        changes and ``fields`` replaced."""
        parent = variants[base]
        merged = {**parent.overrides, **(overrides or {})}
        variants[name] = dataclasses.replace(
            parent, name=name, change=change, overrides=merged, **fields
        )

    previous: dict = {"loss": "dice_bce"}
    for name, change, delta in steps:
        values = {**previous, **delta}
        variants[name] = Variant(name=name, change=change, **values)
        previous = values
    # Side branch: one change (the loss) to the "context" recipe.
    context = variants["context"]
    variants["dice_loss"] = Variant(
        name="dice_loss",
        change="context recipe with Dice loss instead of Dice + BCE",
        loss="dice",
        preprocess=context.preprocess,
        overrides=context.overrides,
    )
    # Side branch: the baseline recipe with synthetic patients added to the one real training
    # patient (its effect per fold: docs/results.md, ablation table).
    variants["phantom"] = Variant(
        name="phantom",
        change="baseline + 8 phantom patients in training",
        loss=variants["baseline"].loss,
        phantom_train=8,
    )
    variants["phantom_long"] = Variant(
        name="phantom_long",
        change="phantom recipe trained 30 epochs instead of 15",
        loss=variants["baseline"].loss,
        overrides={"epochs": 30},
        phantom_train=8,
    )
    # Found by error analysis of patient 7 (a 0.7 L extrahepatic mass segmented as liver): the
    # phantom only had hypodense lesions *inside* the liver mask. Chosen after seeing the test
    # patient, so its LOPO score is optimistic; the README and docs/real_ct_experiments.md say so.
    vary(
        "masses",
        "phantom_long",
        change="phantom_long + extrahepatic masses in the phantoms",
        anatomy=AnatomyOptions(extrahepatic_masses=True),
    )
    # Also from error analysis: both real patients' left lobes were cut short at the stomach.
    vary(
        "lobe",
        "masses",
        change="masses + long left lobes in the phantoms",
        anatomy=AnatomyOptions(extrahepatic_masses=True, long_left_lobe=True),
    )
    vary(
        "lobe_long",
        "lobe",
        change="lobe recipe trained 45 epochs instead of 30",
        overrides={"epochs": 45},
    )
    # One real patient's ~120 slices are under a fifth of the "lobe" training set. Show them 4
    # times per epoch (about half of all slices) and train 20 epochs instead of 30, so the
    # number of training steps stays about the same.
    vary(
        "real4",
        "lobe",
        change="lobe + real slices 4x per epoch, 20 epochs (about the same steps)",
        overrides={"epochs": 20},
        real_repeat=4,
    )
    # Same fields as "real4", trained after the mask-grid fix of commit 830a6a7: until then
    # cv2's nearest neighbour put every training mask 1.5 source pixels up and left of its
    # image (``preprocess.resize_mask``). All variants run since train on aligned masks; the
    # rows measured before the fix keep their old figures.
    vary(
        "aligned",
        "real4",
        change="real4 retrained with masks on the image's pixel grid (mask-resize fix)",
    )
    # From error analysis of patient 1: most of its missed tumour volume is one 84 mL lesion,
    # larger than nearly all phantom lesions (radius up to 24 mm).
    vary(
        "big_lesions",
        "aligned",
        change="aligned + phantom lesions up to 45 mm radius instead of 24 mm",
        anatomy=AnatomyOptions(extrahepatic_masses=True, long_left_lobe=True, large_lesions=True),
    )
    # 2.5D was only tried on the weak "baseline" recipe; try it on the strong one.
    vary(
        "aligned_context",
        "aligned",
        change="aligned + 2.5D: 1 slice of context on each side",
        overrides={"context_slices": 1},
    )
    # The two real patients were scanned with fields of view of 292 and 400 mm (pixels of 0.57
    # and 0.78 mm), the phantoms with 358 mm: the same liver fills 1.37 times more of the slice
    # in one patient than in the other, beyond the +-10 % zoom of the default augmentation.
    # Chosen from the scans' pixel spacing (header data, not the test patients' masks).
    vary(
        "zoom",
        "aligned",
        change="aligned + random zoom 0.7-1.4 instead of 0.9-1.1 (fields of view 290-400 mm)",
        overrides={"zoom_range": (0.7, 1.4)},
    )
    # The "aligned" folds were still learning at epoch 20 (training Dice 0.928 at epoch 16,
    # 0.945 at epoch 20; phantom validation Dice 0.84 -> 0.87): train twice as long.
    vary(
        "aligned_long",
        "aligned",
        change="aligned trained 40 epochs instead of 20",
        overrides={"epochs": 40},
    )
    # Loss choice on the strong recipe: the paper's soft Dice loss alone (at this recipe's
    # Adam 3e-4; at the paper's 1e-3 the first real-data fold collapsed to an empty mask).
    vary(
        "aligned_dice",
        "aligned",
        change="aligned with the paper's soft Dice loss instead of Dice + BCE",
        loss="dice",
    )
    # Width: the paper's UNet starts at 32 filters (32-64-128-256-512), this recipe at 16. Twice
    # the filters is about 4x the multiply-adds and parameters; does capacity help, or does one
    # real training patient make a wider network overfit?
    vary(
        "aligned_wide",
        "aligned",
        change="aligned with the paper's widths, 32-512 filters instead of 16-256",
        overrides={"base_filters": 32},
    )
    # Augmentation that changes shape, not just position: one real training patient shows one
    # liver. A smooth elastic warp of 3 % of the side (about 11 mm at the real scans' fields of
    # view) instead of 1 % makes it look like livers and bodies of other shapes. Chosen from
    # pictures of warped training slices, before any run of it was scored.
    vary(
        "aligned_elastic",
        "aligned",
        change="aligned + elastic warp of 3 % of the side instead of 1 %",
        overrides={"elastic_alpha_fraction": 0.03},
    )
    # The stronger warp made the narrow recipe robust to its seed (seeds 42-44); does it add to
    # the paper's widths? Defined before any run of it.
    vary(
        "aligned_wide_elastic",
        "aligned_wide",
        change="aligned_wide + elastic warp of 3 % of the side instead of 1 %",
        overrides={"elastic_alpha_fraction": 0.03},
    )
    # Other planes, for a multi-view ensemble (benchmarks/multiview_ensemble.py): the same
    # recipe on coronal and on sagittal slices of the CT resampled to 3 mm voxels (the axial
    # recipe's pixels are 2.3-3.1 mm). 128 px at 3 mm cover 384 mm: the 400 mm field of view
    # of patient 7 loses 2 and 3 pixels of air and skin at its sides, none of its liver
    # (preprocess warns when a crop cuts mask pixels). Defined before any run of them.
    for view in ("coronal", "sagittal"):
        vary(
            f"aligned_{view}",
            "aligned",
            change=f"aligned on {view} slices of the CT resampled to 3 mm",
            preprocess={"target_spacing_mm": 3.0, "view": view},
        )
    # The same planes at the paper's widths, to average with "aligned_wide" (the recipe of the
    # shipped model) if the narrow multi-view ensemble's gain holds. Defined before any run.
    for view in ("coronal", "sagittal"):
        vary(
            f"aligned_wide_{view}",
            f"aligned_{view}",
            change=f"aligned_{view} with the paper's widths, 32-512 filters instead of 16-256",
            overrides={"base_filters": 32},
        )
    # The seed-42 patient-7 fold of "aligned_wide_coronal" collapsed to an empty prediction
    # (training Dice 0 from epoch 2 on); the tumour stage needed batch norm for the same
    # reason. Defined before any run of it.
    vary(
        "aligned_wide_coronal_bn",
        "aligned_wide_coronal",
        change="aligned_wide_coronal + batch normalisation after each convolution",
        batch_norm=True,
    )
    # From the real patients' HU: their livers (median 112 and 120 HU) sit at the top of the
    # phantom's 60-115 HU range, so the phantom is given strongly enhancing livers too.
    vary(
        "enhanced",
        "real4",
        change="real4 + livers at 60-140 HU in the phantoms (portal venous enhancement)",
        anatomy=AnatomyOptions(extrahepatic_masses=True, long_left_lobe=True, enhanced_liver=True),
    )
    # Every fold trains a fixed number of epochs (no real val patient to stop on), so the
    # plateau reducer never fires: decay the learning rate on a fixed curve instead.
    vary(
        "cosine",
        "enhanced",
        change="enhanced + cosine learning-rate decay over the 20 epochs",
        overrides={"lr_schedule": "cosine"},
    )
    # Most remaining errors lie within 5 mm of the liver's surface, about one input pixel at
    # 128 px (2.3-3.1 mm on these patients): a finer input places the boundary better.
    vary(
        "hires",
        "cosine",
        change="cosine + 192 px input instead of 128 px (about 2.2x the training time)",
        overrides={"image_size": 192},
    )
    # "hires" did not help the weaker "cosine" recipe (one seed). On the default pair, 51-70 % of
    # the error voxels lie within 3 mm of the true surface and err irregularly, in and out
    # (benchmarks/liver_edge_errors.py): does a finer input help the stronger recipe? Defined
    # before any run of it.
    vary(
        "aligned_hires",
        "aligned",
        change="aligned + 192 px input instead of 128 px (about 2.2x the training time)",
        overrides={"image_size": 192},
    )
    # Six real patients from three sources (issue 36): each fold now trains on five real
    # patients, so real CT no longer needs to be shown 4 times to outweigh the phantoms. Real
    # slices twice per epoch, 4 phantom patients instead of 8, 16 epochs: about the slices of
    # one "aligned" epoch each epoch, so a fold costs about what an "aligned" fold cost with one
    # real patient and the 6-fold leave-one-out of the pair fits the 3-hour budget of 2 cores.
    # Defined before any run of them; the rule that decides shipping is in
    # docs/real_ct_experiments.md ("Six real patients").
    vary(
        "six",
        "aligned",
        change="aligned for five real training patients: real 2x, 4 phantoms, 16 epochs",
        overrides={"epochs": 16},
        real_repeat=2,
        phantom_train=4,
    )
    # The phantom's share, with five real patients per fold: the same recipe without phantoms
    # in training (phantom_001 still validates), real slices 3x per epoch instead of 2x so an
    # epoch holds about as many slices as a "six" epoch. Defined before any run of it; its rule
    # is in docs/real_ct_experiments.md ("Five real patients without phantoms").
    vary(
        "six_real",
        "six",
        change="six without phantoms in training: real 3x per epoch instead of 2x + 4 phantoms",
        real_repeat=3,
        phantom_train=0,
    )
    # Between the two: half the phantoms (2 instead of 4), real 2x, 20 epochs instead of 16 so
    # that the run shows about as many slices as "six" (about 825 per epoch against 1,017).
    # Defined before any run of it; its rule is in docs/real_ct_experiments.md ("Half the
    # phantoms").
    vary(
        "six_few",
        "six",
        change="six with 2 phantoms instead of 4 and 20 epochs instead of 16 (same slices seen)",
        overrides={"epochs": 20},
        phantom_train=2,
    )
    vary(
        "six_coronal",
        "six",
        change="six on coronal slices of the CT resampled to 3 mm",
        preprocess={"target_spacing_mm": 3.0, "view": "coronal"},
    )
    # The shipped pair's widths (32-512 filters, "aligned_wide") on the six real folds, axial
    # and coronal: about 18 h and 9 h per seed on 2 CPU cores, so trained on a lent GPU
    # (research.fold_bundle). Defined before any run of them; the rule that decides shipping
    # is in docs/real_ct_experiments.md ("The paper's widths over six folds").
    vary(
        "six_wide",
        "six",
        change="six with the paper's widths, 32-512 filters instead of 16-256",
        overrides={"base_filters": 32},
    )
    vary(
        "six_wide_coronal",
        "six_coronal",
        change="six_coronal with the paper's widths, 32-512 filters instead of 16-256",
        overrides={"base_filters": 32},
    )
    # Fine-tuning instead of training from scratch: the axial file shipped until 2026-12-07
    # (START_FILE, restored from git history), whose first network (aligned_wide, seed 42,
    # trained on the two IRCAD patients and 8 phantoms) goes on
    # learning from the fold's five real patients and 4 phantoms, as six_wide would show them,
    # for 6 epochs at a third of the learning rate. Its folds that test an IRCAD patient are
    # not a test (the starting network saw that patient) unless each fold starts from a
    # network that never saw it (crossval --start-from). Defined before any run of it; its
    # rule is in docs/real_ct_experiments.md ("Fine-tuning the shipped network").
    vary(
        "six_tuned",
        "six_wide",
        change="six_wide from the former shipped axial network 1: 6 epochs at 1e-4",
        overrides={"epochs": 6, "learning_rate": 1e-4},
        init_weights=f"{START_FILE}:member_1",
    )
    # That file's other two networks (seeds 43 and 44), fine-tuned the same way, so that the
    # three can be averaged as the shipped file averages them (models/liver_unet.keras since
    # 2026-12-07: the three fine-tuned on all six patients). Defined after two of the
    # four folds of six_tuned were read, before any run of these, and run whatever six_tuned's
    # own rule says; their rule is in the same section.
    for number in (2, 3):
        vary(
            f"six_tuned_{number}",
            "six_tuned",
            change=f"six_tuned from the former shipped axial network {number}",
            init_weights=f"{START_FILE}:member_{number}",
        )
    # The same fine-tuning for the coronal half of the pair: the shipped coronal file's first
    # network (aligned_coronal, seed 42, trained on the two IRCAD patients and 8 phantoms) goes
    # on learning from the fold's five real patients and 4 phantoms, on coronal slices, for 6
    # epochs at 1e-4. It starts from models/liver_unet_coronal.keras as shipped on 2026-12-07;
    # should that file be replaced, this start must move to git history as START_FILE did.
    # Defined before any run of it; its reading is in docs/real_ct_experiments.md
    # ("Fine-tuning the coronal network too").
    vary(
        "six_coronal_tuned",
        "six_coronal",
        change="six_coronal from the shipped coronal network 1: 6 epochs at 1e-4",
        overrides={"epochs": 6, "learning_rate": 1e-4},
        init_weights="models/liver_unet_coronal.keras:member_1",
    )
    return variants


#: The ablation: a ladder (each variant adds one change to the one before it), then two side
#: branches: "dice_loss" (only the loss of "context" changes) and "phantom" (baseline + phantoms).
VARIANTS: dict[str, Variant] = _ladder()
