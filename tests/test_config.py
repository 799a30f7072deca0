"""alexnet_cli/config.py: the paper's numbers as defaults, the released code as a preset, and
overrides on top of either (every recipe field stays its own option)."""

from __future__ import annotations

import dataclasses

import pytest

from alexnet_cli.config import (RECIPE_NAMES, RECIPES, ModelConfig, TrainConfig, model_config_from_dict,
                                resolve_model_config, resolve_train_config, to_dict)
from alexnet_cli.errors import AlexnetError


def test_paper_model_defaults():
    c = resolve_model_config("paper")
    assert c == ModelConfig()
    assert (c.num_classes, c.columns, c.activation) == (1000, 2, "relu")
    assert (c.lrn, c.lrn_size, c.lrn_k, c.lrn_alpha, c.lrn_beta) == (True, 5, 2.0, 1e-4, 0.75)
    assert c.lrn_alpha_over_n is False                      # 4.3: alpha as written
    assert (c.pool_kernel, c.pool_stride, c.dropout) == (3, 2, 0.5)
    assert (c.init_std, c.init_std_conv345, c.bias_fill) == (0.01, 0.01, 1.0)
    assert (c.conv1_order, c.conv1_padding, c.within_map_norm) == ("paper", "paper", False)


def test_paper_train_defaults():
    t = resolve_train_config("paper")
    assert t == TrainConfig()
    assert (t.batch_size, t.lr, t.momentum, t.weight_decay, t.epochs) == (128, 0.01, 0.9, 5e-4, 90)
    assert (t.lr_schedule, t.max_lr_drops, t.plateau_patience, t.code_epoch_base) == ("plateau", 3, 2, 0)
    assert t.plateau_best == "run" == resolve_train_config("code").plateau_best
    assert (t.pca_aug, t.pca_std, t.pca_scale) == (True, 0.1, "paper")
    assert (t.aug_chunk, t.mean_crop, t.bias_lr_mult, t.bias_weight_decay) == (1, "crop", 1.0, True)


def test_code_recipe_changes_exactly_its_fields():
    code, paper = resolve_model_config("code"), resolve_model_config("paper")
    assert code.lrn_alpha_over_n is True and code.conv1_order == "code" and code.within_map_norm is True
    assert code.conv1_padding == "code" and code.init_std_conv345 == 0.03
    changed = {f.name for f in dataclasses.fields(ModelConfig) if getattr(code, f.name) != getattr(paper, f.name)}
    assert changed == set(RECIPES["code"]["model"])
    t = resolve_train_config("code")
    assert (t.epochs, t.lr_schedule, t.bias_lr_mult, t.bias_weight_decay) == (91, "code", 2.0, False)
    assert (t.pca_scale, t.aug_chunk, t.mean_crop) == ("code", 32, "center")
    assert (t.lr, t.momentum, t.weight_decay, t.batch_size) == (0.01, 0.9, 5e-4, 128)   # the paper's rule


def test_every_preset_names_real_fields():
    assert set(RECIPES) == set(RECIPE_NAMES)
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for preset in RECIPES.values():
        assert set(preset["model"]) <= model_fields
        assert set(preset["train"]) <= train_fields


def test_overrides_win_over_the_preset():
    c = resolve_model_config("code", lrn_alpha_over_n=False, num_classes=10, columns=1)
    assert (c.lrn_alpha_over_n, c.num_classes, c.columns) == (False, 10, 1)
    assert c.conv1_order == "code" and c.within_map_norm is True          # the rest of the preset stays
    t = resolve_train_config("code", aug_chunk=1, lr=0.02)
    assert (t.aug_chunk, t.lr, t.lr_schedule) == (1, 0.02, "code")


def test_none_keeps_the_preset():
    c = resolve_model_config("code", lrn_alpha_over_n=None, dropout=None, num_classes=None)
    assert c == resolve_model_config("code")
    assert resolve_train_config("code", epochs=None, mean_crop=None) == resolve_train_config("code")


@pytest.mark.parametrize("overrides", [
    {"activation": "gelu"}, {"columns": 3}, {"num_classes": 1}, {"dropout": 1.0}, {"dropout": -0.1},
    {"pool_kernel": 5}, {"pool_kernel": 3, "pool_stride": 3}, {"conv1_order": "other"},
    {"conv1_padding": "same"}, {"no_such_field": 1},
])
def test_bad_model_values_raise(overrides):
    with pytest.raises(AlexnetError):
        resolve_model_config("paper", **overrides)


@pytest.mark.parametrize("overrides", [
    {"lr": 0.0}, {"lr": -1.0}, {"epochs": 0}, {"batch_size": 0}, {"aug_chunk": 0},
    {"lr_schedule": "cosine"}, {"pca_scale": "raw"}, {"mean_crop": "corner"}, {"learning_rate": 0.1},
    {"plateau_best": "since_drop"}, {"plateau_best": "epoch"},
])
def test_bad_train_values_raise(overrides):
    with pytest.raises(AlexnetError):
        resolve_train_config("paper", **overrides)


def test_unknown_recipe_raises_with_the_choices():
    with pytest.raises(AlexnetError, match="paper, code"):
        resolve_model_config("caffe")
    with pytest.raises(AlexnetError):
        resolve_train_config("caffe")


def test_an_unknown_option_names_the_close_ones():
    """`AlexNet(pool=2)`: the message suggests pool_kernel (and pool_stride); a slip of one letter
    its field; a name like no field none."""
    from alexnet_cli.model import AlexNet
    with pytest.raises(AlexnetError, match=r"^unknown model option\(s\): pool \(did you mean pool_kernel or "
                                           r"pool_stride\?\)$"):
        AlexNet(num_classes=10, pool=2)
    with pytest.raises(AlexnetError, match=r"^unknown train option\(s\): lr_shedule \(did you mean lr_schedule\?\), "
                                           r"xyzzy$"):
        resolve_train_config("paper", xyzzy=1, lr_shedule="code")
    with pytest.raises(AlexnetError, match=r"lrn_alpa \(did you mean lrn_alpha, "):      # the closest first
        resolve_model_config("paper", lrn_alpa=1e-4)


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolve_model_config().lrn = False


def test_model_config_round_trips_through_plain_data():
    c = resolve_model_config("code", num_classes=7, activation="tanh")
    data = to_dict(c)
    assert isinstance(data, dict) and data["num_classes"] == 7
    assert model_config_from_dict(data) == c
    with pytest.raises(AlexnetError, match=r"does not know \(extra\).*upgrade"):
        model_config_from_dict({**data, "extra": 1})


@pytest.mark.parametrize("field, value", [("init_std", -1.0), ("init_std_conv345", -0.5), ("lrn_size", 0),
                                          ("lrn_alpha", -1e-4), ("lrn_beta", float("nan")), ("lrn_k", 0.0)])
def test_impossible_network_values_are_usage_errors(field, value):
    from alexnet_cli.errors import UsageError

    with pytest.raises(UsageError, match=field.replace("_", "[-_]")):      # the flag, where there is one
        ModelConfig(**{field: value})


def test_a_negative_init_std_exits_2_on_the_command_line():
    from typer.testing import CliRunner

    from alexnet_cli.cli.app import app

    result = CliRunner().invoke(app, ["summary", "--init-std-conv345", "-1"])
    assert result.exit_code == 2 and "Error:" in result.output and "--init-std-conv345" in result.output
    assert "Traceback" not in result.output and "RuntimeError" not in result.output


@pytest.mark.parametrize("field, value, flag", [("batch_size", 0, "--batch-size"), ("epochs", 0, "--epochs"),
                                                ("plateau_patience", 0, "--patience"), ("lr", 0.0, "--lr"),
                                                ("weight_decay", -1.0, "--weight-decay"),
                                                ("max_lr_drops", -1, "--max-lr-drops")])
def test_a_bad_training_value_names_its_field_and_the_cli_its_flag(field, value, flag):
    from alexnet_cli.cli.flags import flag_message
    from alexnet_cli.errors import UsageError

    with pytest.raises(UsageError, match=f"^{field} must") as caught:
        TrainConfig(**{field: value})
    assert (caught.value.field, caught.value.value) == (field, value)
    assert flag_message(caught.value) == flag + str(caught.value)[len(field):]


def test_a_library_error_names_the_field_and_value():
    from alexnet_cli.errors import UsageError

    with pytest.raises(UsageError) as caught:
        ModelConfig(dropout=2)
    assert str(caught.value) == "dropout must be in [0, 1), got 2"
    assert (caught.value.field, caught.value.value) == ("dropout", 2)
    with pytest.raises(UsageError, match=r"^activation must be one of relu, tanh; got 'sigmoid'$"):
        ModelConfig(activation="sigmoid")


def test_an_error_in_a_context_keeps_its_field_for_the_cli():
    from alexnet_cli.cli.flags import flag_message
    from alexnet_cli.errors import DataError, UsageError

    error = UsageError("plateau_patience must be at least 1, got 0", field="plateau_patience", value=0)
    wrapped = error.within("ablate, variant full")
    assert type(wrapped) is UsageError and (wrapped.field, wrapped.value) == ("plateau_patience", 0)
    assert str(wrapped) == "ablate, variant full: plateau_patience must be at least 1, got 0"
    assert flag_message(wrapped) == "ablate, variant full: --patience must be at least 1, got 0"
    assert flag_message(DataError("no field here").within("x")) == "x: no field here"
    with pytest.raises(ValueError, match="must begin with it"):
        UsageError("got 0 for lr", field="lr", value=0)


def test_the_cli_names_the_flag_of_a_library_error():
    from typer.testing import CliRunner

    from alexnet_cli.cli.app import app

    for args, line in ((["--dropout", "2"], "Error: --dropout must be in [0, 1), got 2.0"),
                       (["--bias-init", "nan"], "Error: --bias-init must be a finite number, got nan"),
                       (["--pool", "4"], "Error: --pool: pooling must be 3/2"),
                       (["--activation", "sigmoid"], "Error: --activation must be one of relu, tanh; got 'sigmoid'")):
        result = CliRunner().invoke(app, ["summary", *args])
        assert result.exit_code == 2 and result.stderr.startswith(line), (args, result.output)


def test_every_flag_of_the_table_is_a_flag_of_a_command():
    import typer.main

    from alexnet_cli.cli.app import app
    from alexnet_cli.cli.flags import FLAGS

    group = typer.main.get_command(app)
    flags = {opt for cmd in group.commands.values() for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}
    assert set(FLAGS.values()) <= flags, set(FLAGS.values()) - flags


def test_data_search_and_running_errors_name_their_field_and_the_cli_its_flag(tmp_path):
    """The settings of prep, neighbors, RunOptions and the decoder, in the library's names; the
    CLI shows the flags, also of the other settings a message mentions (`k`, `compile`)."""
    from typer.testing import CliRunner

    from alexnet_cli.cli.app import app
    from alexnet_cli.cli.flags import flag_message
    from alexnet_cli.errors import UsageError
    from alexnet_cli.jpeg import resolve_decode
    from alexnet_cli.neighbors import find_neighbors
    from alexnet_cli.prep import PrepOptions
    from alexnet_cli.train import RunOptions

    cases = [
        (lambda: PrepOptions(jpeg_quality=0).check(), "jpeg_quality", 0,
         "jpeg_quality must be in 1..100, got 0", "--jpeg-quality must be in 1..100, got 0"),
        (lambda: PrepOptions(format="png").check(), "format", "png",
         "format must be raw or jpeg, got 'png'", "--format must be raw or jpeg, got 'png'"),
        (lambda: RunOptions(workers=0), "workers", 0,
         "workers must be at least 1, got 0", "--workers must be at least 1, got 0"),
        (lambda: RunOptions(compile_mode="max-autotune"), "compile_mode", "max-autotune",
         "compile_mode max-autotune needs `compile`", "--compile-mode max-autotune needs --compile"),
        (lambda: find_neighbors("x.pt", "data", ["q.jpg"], k=0), "k", 0,
         "k must be at least 1, got 0", "--k must be at least 1, got 0"),
        (lambda: find_neighbors("x.pt", "data", ["q.jpg"], k=5, codes=True, rerank=3), "rerank", 3,
         "rerank must be at least `k` (5), got 3", "--rerank must be at least --k (5), got 3"),
        (lambda: resolve_decode("gpu", "jpeg", "cpu"), "decode", "gpu",
         "decode gpu needs a CUDA `device` (device cpu); use `decode` cpu or auto",
         "--decode gpu needs a CUDA --device (device cpu); use --decode cpu or auto"),
    ]
    for call, field, value, message, cli_message in cases:
        with pytest.raises(UsageError) as caught:
            call()
        assert (str(caught.value), caught.value.field, caught.value.value) == (message, field, value)
        assert flag_message(caught.value) == cli_message
    with pytest.raises(ValueError, match="must write them as `name`"):
        UsageError("rerank must be at least k", field="rerank", mentions=("k",))

    (tmp_path / "src").mkdir()
    for name in ("x.pt", "q.jpg"):
        (tmp_path / name).write_bytes(b"")
    runner = CliRunner()
    for args, line in (
            (["prep", str(tmp_path / "src"), str(tmp_path / "out"), "--shard-size", "0"],
             "Error: --shard-size must be in 1..4096, got 0"),
            (["neighbors", str(tmp_path / "x.pt"), str(tmp_path / "src"), "--query", str(tmp_path / "q.jpg"),
              "--codes", "--k", "5", "--rerank", "3"], "Error: --rerank must be at least --k (5), got 3")):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and result.stderr.strip() == line, (args, result.output)
    assert not (tmp_path / "out").exists()                  # refused before anything is written


def test_a_bad_plateau_best_is_one_error_line_naming_the_flag(tmp_path):
    from typer.testing import CliRunner

    from alexnet_cli.cli.app import app

    (tmp_path / "data").mkdir()
    for command in ("train", "ablate"):
        result = CliRunner().invoke(app, [command, str(tmp_path / "data"), "--out", str(tmp_path / command),
                                          "--plateau-best", "since_drop"])
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == "Error: --plateau-best must be one of run, since-drop; got 'since_drop'"
        assert not (tmp_path / command).exists()                 # refused before anything is written


def test_a_run_recorded_before_plateau_best_had_the_default():
    """config.json files written before `plateau_best` existed compared with the run's best
    (the default): resume, report and ablate read the missing field as "run", no change."""
    from alexnet_cli.config import recorded_settings, settings_changed

    old = to_dict(resolve_train_config("paper"))
    del old["plateau_best"]
    assert recorded_settings(old, TrainConfig())["plateau_best"] == "run"
    assert settings_changed("paper", to_dict(resolve_model_config("paper")), old) == {}
    code = to_dict(resolve_train_config("code"))
    del code["plateau_best"]
    assert settings_changed("code", to_dict(resolve_model_config("code")), code) == {}
    since = to_dict(resolve_train_config("paper", plateau_best="since-drop"))
    assert settings_changed("paper", to_dict(resolve_model_config("paper")), since) == {"plateau_best": "since-drop"}
