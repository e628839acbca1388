"""Tests of liverseg_helpers.training.train on tiny numpy data (32x32 slices, a 2-level UNet)."""

from __future__ import annotations

import json
import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from liverseg_helpers import config  # noqa: E402
from liverseg_helpers.errors import DataError, ModelFileError  # noqa: E402
from liverseg_helpers.training import model as model_mod  # noqa: E402
from liverseg_helpers.training import model_files, train  # noqa: E402

TINY = {"image_size": 32, "base_filters": 4, "depth": 2, "batch_size": 4, "epochs": 2}


def make_slices(n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bright discs ("livers") of random centre and radius on noise; mask = the disc."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:32, :32]
    x = rng.normal(0.2, 0.05, (n, 32, 32, 1)).astype("float32")
    y = np.zeros((n, 32, 32, 1), "float32")
    for i in range(n):
        r0, c0, radius = rng.integers(10, 22), rng.integers(10, 22), rng.integers(4, 9)
        disc = (rows - r0) ** 2 + (cols - c0) ** 2 <= radius**2
        y[i, ..., 0] = disc
        x[i, ..., 0] += 0.5 * disc
    return x, y


def fit_once(run_dir, seed=7, epochs=2, loss="dice"):
    profile = config.get_profile("smoke", **TINY)
    config.set_seeds(seed)
    unet = model_mod.model_from_profile(profile)
    x, y = make_slices()
    xv, yv = make_slices(4, seed=1)
    history = train.fit_model(
        unet, (x, y), (xv, yv), run_dir, profile, loss, epochs=epochs, verbose=0
    )
    return unet, history


def test_one_train_step_gives_finite_loss(tmp_path):
    profile = config.get_profile("smoke", **TINY)
    for name in ("dice", "bce", "dice_bce", "focal", "tversky"):
        unet = model_mod.model_from_profile(profile)
        train.compile_model(unet, profile, name)
        x, y = make_slices(4)
        logs = unet.train_on_batch(x, y, return_dict=True)
        assert math.isfinite(logs["loss"]), name
        assert 0.0 <= logs["dice_metric"] <= 1.0


def test_fit_model_writes_run_folder(tmp_path):
    _, history = fit_once(tmp_path)
    assert len(history["loss"]) == 2
    assert {"val_loss", "val_dice_metric", "val_iou_metric", "learning_rate"} <= set(history)
    for name in ("best.keras", "best.keras.json", "last.keras", "history.csv"):
        assert (tmp_path / name).exists(), name
    state = json.loads((tmp_path / train.STATE_FILE).read_text())
    assert state["epoch"] == 2
    assert state["best_val_loss"] == pytest.approx(min(history["val_loss"]))
    csv_history = train.read_history(tmp_path)
    assert csv_history["epoch"] == [0.0, 1.0]
    np.testing.assert_allclose(csv_history["loss"], history["loss"], rtol=1e-6)
    assert train.best_val_dice(csv_history) is not None
    model_files.load_model(tmp_path / "best.keras")  # loadable in safe mode


def test_the_training_step_is_traced_into_a_graph_once(tmp_path):
    """``fit.make_training_variables`` makes Adam's, the loss's and the metrics' variables
    before training, so TensorFlow need not trace the step again after making them (a Python
    call of ``train_step`` is one trace; the graph then runs without Python)."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("graph tracing is TensorFlow's")
    profile = config.get_profile("smoke", **TINY)
    unet = model_mod.model_from_profile(profile)
    traces, train_step = [], unet.train_step
    unet.train_step = lambda data: traces.append(1) or train_step(data)
    x, y = make_slices()
    train.fit_model(unet, (x, y), None, tmp_path, profile, "dice", epochs=2, verbose=0)
    assert len(traces) == 1


def test_fit_model_is_deterministic_with_the_same_seed(tmp_path):
    _, first = fit_once(tmp_path / "a")
    _, second = fit_once(tmp_path / "b")
    assert first == second  # bit-identical on CPU with op determinism
    _, other = fit_once(tmp_path / "c", seed=8)
    assert other["loss"] != first["loss"]


def test_resume_continues_epoch_count_and_optimizer(tmp_path):
    profile = config.get_profile("smoke", **TINY)
    unet, _ = fit_once(tmp_path, epochs=2)
    steps_done = int(keras.ops.convert_to_numpy(unet.optimizer.iterations))
    assert steps_done == 2 * 3  # 12 slices / batch 4, two epochs

    resumed = model_files.load_model(tmp_path / "last.keras")
    assert int(keras.ops.convert_to_numpy(resumed.optimizer.iterations)) == steps_done
    state_path = tmp_path / train.STATE_FILE
    assert json.loads(state_path.read_text())["fit_s"] > 0
    # Pretend the first two epochs took 1000 s: the resumed run's fit_s must add to them.
    state_path.write_text(json.dumps({**json.loads(state_path.read_text()), "fit_s": 1000.0}))
    x, y = make_slices()
    xv, yv = make_slices(4, seed=1)
    history = train.fit_model(
        resumed, (x, y), (xv, yv), tmp_path, profile, "dice", initial_epoch=2, epochs=3, verbose=0
    )
    assert len(history["loss"]) == 1
    assert int(keras.ops.convert_to_numpy(resumed.optimizer.iterations)) == steps_done + 3
    assert train.read_history(tmp_path)["epoch"] == [0.0, 1.0, 2.0]
    assert json.loads((tmp_path / train.STATE_FILE).read_text())["epoch"] == 3
    assert json.loads(state_path.read_text())["fit_s"] > 1000.0


def test_cosine_schedule_decays_the_learning_rate_each_epoch(tmp_path):
    from liverseg_helpers.training import fit

    assert fit.cosine_learning_rate(0, 10, 1e-3) == pytest.approx(1e-3)
    assert fit.cosine_learning_rate(5, 10, 1e-3) == pytest.approx(5e-4)
    assert 0 < fit.cosine_learning_rate(9, 10, 1e-3) < 3e-5
    with pytest.raises(ValueError, match="lr_schedule"):
        fit.lr_schedule_callback(config.get_profile("smoke", lr_schedule="step"), 4)
    assert fit.lr_schedule_callback(config.get_profile("smoke"), 4) is None  # the paper's

    profile = config.get_profile("smoke", **{**TINY, "epochs": 4}, lr_schedule="cosine")
    config.set_seeds(7)
    x, y = make_slices()
    history = train.fit_model(
        model_mod.model_from_profile(profile),
        (x, y),
        make_slices(4, 1),
        tmp_path,
        profile,
        "dice",
        verbose=0,
    )
    expected = [fit.cosine_learning_rate(e, 4, profile.learning_rate) for e in range(4)]
    np.testing.assert_allclose(history["learning_rate"], expected, rtol=1e-5)


def test_train_resume_without_checkpoint_raises(tmp_path):
    cfg = train.TrainConfig(data_dir=None, run_dir=tmp_path / "run", profile="smoke", resume=True)
    with pytest.raises(ModelFileError, match="last.keras: nothing to resume"):
        train.train(cfg)


def test_train_cli_keeps_tumour_runs_apart_and_checks_the_loss_first(monkeypatch, capsys):
    from liverseg_helpers import cli

    monkeypatch.delenv(config.ENV_RUN_DIR, raising=False)
    seen = []

    def fake_train(cfg):
        seen.append(cfg)
        return train.TrainResult(
            run_dir=cfg.run_dir, model_path=cfg.run_dir / "best.keras", history={}
        )

    monkeypatch.setattr(train, "train", fake_train)
    assert cli.main(["train", "--profile", "smoke"]) == 0
    assert cli.main(["train", "--profile", "smoke", "--task", "tumour"]) == 0
    assert [cfg.run_dir.as_posix() for cfg in seen] == ["runs/smoke", "runs/smoke-tumour"]
    with pytest.raises(DataError, match="unknown loss 'dicee'"):
        train.run_train_cli(
            SimpleNamespace(profile="smoke", loss="dicee", task="liver", run_dir=None, resume=False)
        )
    assert len(seen) == 2  # refused before any data was prepared


def test_training_time_of_a_resumed_run_is_the_sum_or_unknown(tmp_path):
    fresh = train.TrainResult(tmp_path, tmp_path / "best.keras", {}, elapsed_s=600.0)
    assert fresh.total_s == 600.0 and fresh.describe_time() == "10.0 min"
    resumed = train.TrainResult(tmp_path, tmp_path, {}, elapsed_s=60.0, earlier_s=540.0)
    assert resumed.total_s == 600.0 and "10.0 min in all" in resumed.describe_time()
    # Resumed from a run that never recorded its time: unknown, not this call's minute.
    unknown = train.TrainResult(tmp_path, tmp_path, {}, elapsed_s=6.0, earlier_s=None)
    assert math.isnan(unknown.total_s) and "not recorded" in unknown.describe_time()


def test_cpu_device_setup_changes_nothing():
    setup = train.select_device_setup()
    assert setup.replicas == 1
    assert setup.policy == keras.mixed_precision.dtype_policy().name == "float32"


def test_unknown_training_precision_is_refused_by_name():
    with pytest.raises(DataError, match="training precision must be one of .* got 'fp16'"):
        train.select_device_setup("fp16")


def test_training_in_bfloat16_records_it_and_saves_models_that_load_as_float32(tmp_path):
    """TrainConfig(precision="bfloat16"): the run trains under mixed_bfloat16 (weights float32),
    says so in config.json, restores the global policy, resumes in bfloat16, and its saved
    model is used in float32 unless prediction chooses bfloat16."""
    from liverseg_helpers.inference import precision

    cfg = train.TrainConfig(
        data_dir=None,
        run_dir=tmp_path / "runs" / "bf16",
        profile="smoke",
        overrides=TINY,
        precision="bfloat16",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the emulation warning on CPUs without bfloat16
        result = train.train(cfg)
    assert keras.mixed_precision.dtype_policy().name == "float32"
    recorded = json.loads((result.run_dir / "config.json").read_text())
    assert recorded["precision"] == "bfloat16"
    assert recorded["precision_policy"] == "mixed_bfloat16"
    for_resume = model_files.load_model(result.run_dir / "last.keras", compile=True)
    assert precision.computes_in_bfloat16(for_resume)
    assert all(w.dtype == "float32" for w in for_resume.weights)
    for_use = model_files.load_model(result.run_dir / "last.keras", compile=False)
    assert not precision.computes_in_bfloat16(for_use)
    x, _ = make_slices(4)
    exact = for_use.predict(x, verbose=0)
    # The float32 form keeps the trained weights: it answers like a fresh float32 copy of them.
    twin = model_mod.model_from_profile(config.get_profile("smoke", **TINY))
    twin.set_weights(for_use.get_weights())
    np.testing.assert_array_equal(exact, twin.predict(x, verbose=0))
    # ... and like the bfloat16 network it was trained as, to bfloat16's rounding.
    np.testing.assert_allclose(exact, for_resume.predict(x, verbose=0), atol=0.02)
    cfg.resume, cfg.epochs = True, 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train.train(cfg)
    assert train.read_history(cfg.run_dir)["epoch"] == [0.0, 1.0, 2.0]
    resumed = model_files.load_model(result.run_dir / "last.keras", compile=True)
    assert precision.computes_in_bfloat16(resumed)


@pytest.mark.slow
def test_train_smoke_on_phantom_cohort(tmp_path, capsys):
    args = SimpleNamespace(
        data=None,
        run_dir=str(tmp_path / "runs" / "smoke"),
        profile="smoke",
        task="liver",
        loss="dice",  # the paper's, not the default: a resume must keep it
        seed=42,
        epochs=2,
        resume=False,
        precision="auto",
    )
    assert train.run_train_cli(args) == 0
    out = capsys.readouterr().out
    assert "best val dice" in out
    run_dir = tmp_path / "runs" / "smoke"
    for name in (
        "config.json",
        "split.json",
        "preprocess.json",
        "history.csv",
        "best.keras",
        "best.keras.json",
        "figures/architecture.png",
    ):
        assert (run_dir / name).exists(), name
    split = json.loads((run_dir / "split.json").read_text())
    assert not set(split["train"]) & set(split["val"])
    # Resuming with the default loss would mix two losses in one model: refused, named.
    cfg = train.TrainConfig(data_dir=None, run_dir=run_dir, profile="smoke", resume=True)
    with pytest.raises(DataError, match="config.json: this run was trained with the loss 'dice'"):
        train.train(cfg)
    # The command resumes with the loss the run recorded when --loss is not given (with the
    # default loss, train() would refuse as above).
    args.resume, args.epochs, args.loss = True, 3, None
    assert train.run_train_cli(args) == 0
    assert train.read_history(run_dir)["epoch"] == [0.0, 1.0, 2.0]


def feed_dice(values, tmp_path, losses=None):
    """Run StopWhenCollapsed over epochs with these training Dice values (and losses, 1.8 at
    every epoch by default: a loss that does not move); return the model."""
    from liverseg_helpers.training.fit import StopWhenCollapsed

    net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    net.stop_training = False
    callback = StopWhenCollapsed(tmp_path, patience=3)
    callback.set_model(net)
    for epoch, (dice, loss) in enumerate(zip(values, losses or [1.8] * len(values), strict=True)):
        callback.on_epoch_end(epoch, {"dice_metric": dice, "loss": loss})
    return net


def test_a_network_predicting_no_liver_for_three_epochs_stops_with_a_warning(tmp_path):
    with pytest.warns(RuntimeWarning, match="training collapsed.*stopped at epoch 4"):
        net = feed_dice([0.4, 0.0, 0.001, 0.0], tmp_path)
    assert net.stop_training


def test_a_network_whose_loss_still_falls_is_alive_though_it_predicts_no_liver_yet(
    tmp_path, recwarn
):
    # Dice + BCE on the course profile: no liver in epochs 1 and 2 while the loss fell.
    net = feed_dice([0.0, 0.0, 0.0, 0.0], tmp_path, losses=[1.44, 0.88, 0.80, 0.74])
    assert not net.stop_training
    assert not [w for w in recwarn if "collapsed" in str(w.message)]
    # The same Dice with a loss that rises or moves by under 5 %: dead (soft Dice at 0.9999).
    with pytest.warns(RuntimeWarning, match="stopped at epoch 4"):
        net = feed_dice([0.3, 0.0, 0.0, 0.0], tmp_path, losses=[0.79, 0.9999, 0.9999, 0.9998])
    assert net.stop_training


def test_a_network_that_recovers_between_low_epochs_keeps_training(tmp_path, recwarn):
    net = feed_dice([0.0, 0.0, 0.3, 0.0, 0.0, 0.9], tmp_path)
    assert not net.stop_training
    assert not [w for w in recwarn if "collapsed" in str(w.message)]


@pytest.mark.parametrize(("task", "epochs_run"), [("liver", 3), ("tumour", 5)])
def test_fit_model_stops_a_dead_liver_network_but_not_a_tumour_one(tmp_path, task, epochs_run):
    profile = config.get_profile("smoke", **TINY)
    config.set_seeds(7)
    unet = model_mod.model_from_profile(profile)
    head = unet.layers[-1]  # the 1x1 sigmoid convolution
    kernel, bias = head.get_weights()
    head.set_weights([np.zeros_like(kernel), np.full_like(bias, -40.0)])  # saturated: all 0
    x, y = make_slices()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = train.fit_model(
            unet, (x, y), None, tmp_path, profile, "dice", epochs=5, task=task, verbose=0
        )
    assert len(history["loss"]) == epochs_run
    assert max(history["dice_metric"]) < 0.01
    collapsed = [w for w in caught if "training collapsed" in str(w.message)]
    assert len(collapsed) == (task == "liver")


def test_notebook_04_fit_by_hand_gives_the_history_of_train(tmp_path, monkeypatch):
    """The cells of notebook 04 tagged ``fit-by-hand`` (prepare_training, compile, model.fit
    with the callbacks written out) and ``train.train`` give the same history at one seed."""
    from dataclasses import replace
    from pathlib import Path

    from liverseg_helpers import course
    from liverseg_helpers.data import phantom
    from liverseg_helpers.training import fit, losses

    tiny = replace(
        config.get_profile("smoke"),
        **{**TINY, "epochs": 3},
        early_stopping_patience=2,
        reduce_lr_patience=1,
        phantom_patients=4,
        phantom_slices=12,
        phantom_size=64,
    )
    monkeypatch.setitem(config.PROFILES, "smoke", tiny)
    data_dir = phantom.ensure_phantom_cohort(tmp_path / "data", tiny)
    notebook = json.loads((course.find_repo_root() / "notebooks" / "04_training.ipynb").read_text())
    cells = [c for c in notebook["cells"] if "fit-by-hand" in c["metadata"].get("tags", [])]
    assert len(cells) == 4  # data, compile, callbacks, fit
    by_hand = tmp_path / "by_hand"
    ctx = SimpleNamespace(profile=tiny, data_dir=data_dir, run_dir=by_hand, seed=42)
    names = dict(ctx=ctx, LOSS="dice_bce", keras=keras, fit=fit, losses=losses, train=train)
    names.update(model_mod=model_mod, print=lambda *args, **kwargs: None)
    for cell in cells:
        exec("".join(cell["source"]), names)  # noqa: S102  (the notebook's own code)
    one_call = train.train(
        train.TrainConfig(
            data_dir=data_dir,
            run_dir=tmp_path / "one_call",
            profile="smoke",
            seed=42,
            cache_dir=by_hand / "cache",
        )
    )
    hand_history = train.read_history(by_hand)
    assert len(hand_history["loss"]) == 3
    assert hand_history == one_call.history
    for name in ("config.json", "split.json", "preprocess.json", "best.keras", "best.keras.json"):
        assert (Path(by_hand) / name).exists(), name
    assert json.loads((by_hand / "config.json").read_text())["loss"] == "dice_bce"


def test_training_starts_from_the_weights_it_is_given(tmp_path):
    """TrainConfig(init_weights=...): the run starts from that network, not from random
    weights; at a learning rate too small to move them, it ends where it started."""
    profile = config.get_profile("smoke", **TINY)
    start = model_mod.model_from_profile(profile)
    path = model_files.save_model(start, tmp_path / "start.keras", {"image_size": 32})
    cfg = train.TrainConfig(
        data_dir=None,
        run_dir=tmp_path / "runs" / "tuned",
        profile="smoke",
        overrides={**TINY, "epochs": 1, "learning_rate": 1e-12},
        init_weights=str(path),
        seed=5,  # not the seed the start was built with: random weights would differ
    )
    result = train.train(cfg)
    ended = model_files.load_model(result.run_dir / "last.keras", compile=False)
    for before, after in zip(start.get_weights(), ended.get_weights(), strict=True):
        np.testing.assert_allclose(after, before, atol=1e-6)
