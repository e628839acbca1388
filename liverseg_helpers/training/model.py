"""The 2D UNet of the course (Keras 3, any backend): build it, count it, draw it.

By default :func:`build_unet` builds exactly the paper's network: per level two 3x3
same-padding ReLU convolutions, 32-64-128-256-512 filters, 2x2 max pooling, 2x2 stride-2
transposed convolutions whose output is concatenated with the encoder's skip connection,
and a 1x1 sigmoid convolution: 7,759,521 parameters for a 256x256x1 input.

Layers are named by level so a summary reads like the figure: ``enc1_conv1`` ...
``enc4_pool``, ``bottleneck_conv1``, ``bottleneck_conv2``, then ``dec4_up``, ``dec4_concat``,
``dec4_conv1`` ... ``dec1_conv2`` (decoder level *k* joins encoder level *k*) and ``probs``.

Saving and loading models (``.keras`` files with a settings sidecar) is in
:mod:`liverseg_helpers.training.model_files`.
"""

from __future__ import annotations

import os
from typing import Any

import keras
from keras import layers

from liverseg_helpers.atomic import atomic_file

UPSAMPLING_MODES = ("transpose", "bilinear")


def _conv_block(x: Any, filters: int, prefix: str, batch_norm: bool, dropout: float = 0.0) -> Any:
    """Two 3x3 same-padding convolutions with ReLU (optionally conv-BN-ReLU)."""
    for i in (1, 2):
        # With batch norm the conv bias is redundant (BN has its own shift).
        x = layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=not batch_norm,
            activation=None if batch_norm else "relu",
            name=f"{prefix}_conv{i}",
        )(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{prefix}_bn{i}")(x)
            x = layers.Activation("relu", name=f"{prefix}_relu{i}")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name=f"{prefix}_dropout")(x)
    return x


def build_unet(
    input_shape: tuple[int, int, int] = (256, 256, 1),
    base_filters: int = 32,
    depth: int = 4,
    batch_norm: bool = False,
    dropout: float = 0.0,
    upsampling: str = "transpose",
    name: str = "unet",
) -> keras.Model:
    """Build a 2D UNet; the defaults give the paper's network (7,759,521 parameters).

    Args:
        input_shape: (height, width, channels) of one slice; channels = 1 for 2D, 2k+1 for
            2.5D input with k neighbouring slices on each side. Height and width must be
            divisible by ``2**depth``.
        base_filters: Filters of the first level; each level below doubles them.
        depth: Number of 2x2 down-sampling steps (4 in the paper: 32-64-128-256-512).
        batch_norm: Insert batch normalisation between each convolution and its ReLU.
        dropout: Dropout rate applied after the bottleneck block and after each decoder
            block (0 = none, as in the paper).
        upsampling: ``"transpose"`` (paper: 2x2 stride-2 Conv2DTranspose) or ``"bilinear"``
            (bilinear up-sampling followed by a 2x2 convolution; fewer checkerboard artefacts).
        name: Model name.

    Returns:
        An uncompiled ``keras.Model`` mapping float32 (batch, H, W, C) slices in [0, 1] to
        float32 (batch, H, W, 1) foreground probabilities. The output layer is float32 even
        under a mixed-precision policy, so losses stay numerically stable.

    Raises:
        ValueError: Bad depth, filters, dropout, up-sampling mode, or an input size that is
            not divisible by ``2**depth``.
    """
    if depth < 1 or base_filters < 1:
        raise ValueError(f"depth and base_filters must be >= 1, got {depth} and {base_filters}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if upsampling not in UPSAMPLING_MODES:
        raise ValueError(f"upsampling must be one of {UPSAMPLING_MODES}, got {upsampling!r}")
    height, width = input_shape[0], input_shape[1]
    factor = 2**depth
    if height % factor or width % factor:
        raise ValueError(
            f"input {height}x{width} is not divisible by 2**depth = {factor}; "
            "choose an image_size that is a multiple of it"
        )

    inputs = keras.Input(shape=tuple(input_shape), name="slices")
    x = inputs
    skips = []
    for level in range(1, depth + 1):
        x = _conv_block(x, base_filters * 2 ** (level - 1), f"enc{level}", batch_norm)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)

    x = _conv_block(x, base_filters * 2**depth, "bottleneck", batch_norm, dropout)

    for level in range(depth, 0, -1):
        filters = base_filters * 2 ** (level - 1)
        if upsampling == "transpose":
            x = layers.Conv2DTranspose(
                filters, 2, strides=2, padding="same", name=f"dec{level}_up"
            )(x)
        else:
            x = layers.UpSampling2D(2, interpolation="bilinear", name=f"dec{level}_resize")(x)
            x = layers.Conv2D(filters, 2, padding="same", name=f"dec{level}_up")(x)
        x = layers.Concatenate(axis=-1, name=f"dec{level}_concat")([x, skips[level - 1]])
        x = _conv_block(x, filters, f"dec{level}", batch_norm, dropout)

    outputs = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="probs")(x)
    return keras.Model(inputs, outputs, name=name)


def model_from_profile(
    profile: Any, in_channels: int | None = None, batch_norm: bool = False
) -> keras.Model:
    """Build the UNet a profile asks for.

    Args:
        profile: A :class:`liverseg_helpers.config.Profile` (image_size, base_filters, depth,
            context_slices).
        in_channels: Input channels; None = ``2 * profile.context_slices + 1``.
        batch_norm: Batch normalisation after each convolution (the paper has none).

    Returns:
        An uncompiled UNet for (image_size, image_size, in_channels) slices.
    """
    channels = in_channels if in_channels is not None else 2 * profile.context_slices + 1
    return build_unet(
        input_shape=(profile.image_size, profile.image_size, channels),
        base_filters=profile.base_filters,
        depth=profile.depth,
        batch_norm=batch_norm,
        name=f"unet_{profile.name}",
    )


def receptive_field(depth: int = 4, convs_per_level: int = 2, kernel: int = 3) -> int:
    """Theoretical receptive field of one output pixel of the UNet, in input pixels.

    The widest path runs down through every encoder level and the bottleneck and back up.
    A k x k convolution widens the field by ``(k - 1) * jump`` where ``jump`` is the input
    pixels between neighbouring features; 2x2 pooling widens it by ``jump`` and doubles the
    jump; a 2x2 stride-2 transposed convolution halves the jump without widening.

    Args:
        depth: Down-sampling steps.
        convs_per_level: Convolutions per level (2 in the paper).
        kernel: Convolution kernel side (3 in the paper).

    Returns:
        Receptive field side in pixels (200 for the paper's depth-4 network).
    """
    field, jump = 1, 1
    for _ in range(depth):  # encoder: convs then pool
        field += convs_per_level * (kernel - 1) * jump
        field += jump
        jump *= 2
    field += convs_per_level * (kernel - 1) * jump  # bottleneck
    for _ in range(depth):  # decoder: up-sample then convs
        jump //= 2
        field += convs_per_level * (kernel - 1) * jump
    return field


def count_conv_flops(model: keras.Model) -> int:
    """Forward floating-point operations per slice of the convolutions, from layer shapes.

    A convolution costs ``2 * k * k * c_in * c_out`` per output pixel (a multiply and an add
    per weight); a stride-s transposed convolution the same per *input* pixel. Biases, ReLU,
    pooling and concatenation are ignored (well under 1 % here). A training step costs about
    3x the forward pass (forward, gradient w.r.t. activations, gradient w.r.t. weights).

    Args:
        model: A built Keras model with Conv2D / Conv2DTranspose layers.

    Returns:
        FLOPs for one input slice (24.07 GFLOPs for the paper's 256x256 UNet).
    """
    flops = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2DTranspose):
            kh, kw = layer.kernel_size
            _, height, width, c_in = layer.input.shape
            flops += 2 * kh * kw * c_in * layer.filters * height * width
        elif isinstance(layer, layers.Conv2D):
            kh, kw = layer.kernel_size
            c_in = layer.input.shape[-1]
            _, height, width, _ = layer.output.shape
            flops += 2 * kh * kw * c_in * layer.filters * height * width
    return int(flops)


def _level_of(layer_name: str) -> str:
    return layer_name.split("_", 1)[0]


def describe_unet(model: keras.Model) -> list[dict]:
    """One row per UNet level: where it sits, its resolution, filters and parameters.

    Args:
        model: A model from :func:`build_unet` (layers named ``enc1_...``, ``bottleneck_...``).

    Returns:
        List of dicts with keys ``level`` (``enc1`` ... ``bottleneck`` ... ``dec1``, ``probs``),
        ``stage`` (encoder/bottleneck/decoder/output), ``resolution`` (``"HxW"`` pixels),
        ``filters`` and ``params``; ``pandas.DataFrame(rows)`` shows it as a table.
    """
    rows: dict[str, dict] = {}
    for layer in model.layers:
        level = _level_of(layer.name)
        if level == "slices":
            continue
        if level not in rows:
            stage = {"enc": "encoder", "dec": "decoder", "bot": "bottleneck"}.get(
                level[:3], "output"
            )
            rows[level] = {
                "level": level,
                "stage": stage,
                "resolution": "",
                "filters": 0,
                "params": 0,
            }
        row = rows[level]
        row["params"] += layer.count_params()
        if isinstance(layer, (layers.Conv2D, layers.Conv2DTranspose)) and not row["filters"]:
            height, width = layer.output.shape[1:3]
            row["resolution"] = f"{height}x{width}"
            row["filters"] = layer.filters
    return list(rows.values())


def plot_architecture(model: keras.Model, path: str | os.PathLike | None = None) -> Any:
    """Draw the UNet as a U of level boxes (no graphviz needed).

    Args:
        model: A model from :func:`build_unet`.
        path: Optional PNG/SVG/PDF path; written atomically.

    Returns:
        The matplotlib Figure (the caller shows or closes it).
    """
    import matplotlib.pyplot as plt

    rows = describe_unet(model)
    enc = [r for r in rows if r["stage"] == "encoder"]
    dec = [r for r in rows if r["stage"] == "decoder"]
    bottom = [r for r in rows if r["stage"] == "bottleneck"]
    depth = len(enc)
    fig, ax = plt.subplots(figsize=(10, 5.5))
    xy: dict[str, tuple[float, float]] = {}
    for i, row in enumerate(enc):
        xy[row["level"]] = (i, depth - i)
    for row in bottom:
        xy[row["level"]] = (depth, 0)
    for row in dec:
        level = int(row["level"][3:])
        xy[row["level"]] = (2 * depth - level + 1, depth - level + 1)
    colours = {"encoder": "#9ecae1", "bottleneck": "#fdae6b", "decoder": "#a1d99b"}
    for row in enc + bottom + dec:
        x, y = xy[row["level"]]
        ax.add_patch(
            plt.Rectangle((x - 0.42, y - 0.35), 0.84, 0.7, fc=colours[row["stage"]], ec="black")
        )
        ax.text(
            x,
            y,
            f"{row['level']}\n{row['resolution']}\n{row['filters']} filt.\n{row['params']:,} p.",
            ha="center",
            va="center",
            fontsize=7,
        )
    order = [r["level"] for r in enc + bottom + sorted(dec, key=lambda r: -int(r["level"][3:]))]
    for a, b in zip(order[:-1], order[1:], strict=True):
        (x0, y0), (x1, y1) = xy[a], xy[b]
        ax.annotate(
            "",
            xy=(x1, y1 + (0.35 if y1 < y0 else -0.35)),
            xytext=(x0, y0 - (0.35 if y1 < y0 else -0.35)),
            arrowprops={"arrowstyle": "->", "color": "red" if y1 < y0 else "green"},
        )
    for row in enc:
        level = row["level"][3:]
        (x0, y0), (x1, _) = xy[row["level"]], xy[f"dec{level}"]
        ax.annotate(
            "",
            xy=(x1 - 0.42, y0),
            xytext=(x0 + 0.42, y0),
            arrowprops={"arrowstyle": "->", "ls": "--", "color": "grey"},
        )
    ax.set_xlim(-0.7, 2 * depth + 0.7)
    ax.set_ylim(-0.7, depth + 0.9)
    ax.axis("off")
    ax.set_title(
        f"{model.name}: {model.count_params():,} parameters, input {tuple(model.input.shape[1:])}"
        "\nred: 2x2 max-pool, green: 2x2 up-sampling, grey dashed: skip (concatenate)"
    )
    if path is not None:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
    return fig
