"""Learning-rate schedules: the paper's plateau rule and the released code's fixed drops."""

import pytest

from alexnet_cli.config import resolve_train_config
from alexnet_cli.schedule import Schedule

NAMES = [f"{layer}.{kind}" for layer in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
         for kind in ("weight", "bias")]


def test_plateau_divides_by_ten_at_most_three_times():
    s = Schedule(resolve_train_config("paper", plateau_patience=2), NAMES)
    assert s.rates(0).lr["fc6.weight"] == pytest.approx(0.01)
    errors = [0.9, 0.8, 0.8, 0.8] + [0.8] * 20          # stops improving after epoch 1
    drops = [s.observe(e, err) for e, err in enumerate(errors)]
    assert drops[:4] == [False, False, False, True]      # two epochs without a new best
    assert sum(drops) == 3                               # "reduced three times"
    assert s.rates(30).lr["conv3.weight"] == pytest.approx(1e-5)
    assert s.rates(30).color_noise


# both sides of every boundary of layer-params-145.cfg's notes (0-based epochs: docs/paper-vs-code.md)
@pytest.mark.parametrize("epoch, weights, conv1_w, conv1_b, bias, noise", [
    (0, 1e-2, 1e-2, 0.02, 0.02, True),
    (24, 1e-2, 1e-2, 0.02, 0.02, True),
    (25, 1e-3, 1e-3, 0.02, 0.02, True),
    (50, 1e-3, 1e-3, 0.02, 0.02, True),
    (51, 1e-4, 1e-4, 0.02, 0.02, True),
    (66, 1e-4, 1e-4, 0.02, 0.02, True),
    (67, 1e-4, 1e-5, 0.02, 0.02, False),
    (71, 1e-4, 1e-5, 0.02, 0.02, False),
    (72, 1e-4, 0.0, 0.0, 0.02, False),
    (78, 1e-4, 0.0, 0.0, 0.02, False),
    (79, 1e-5, 0.0, 0.0, 0.02, False),
    (90, 1e-5, 0.0, 0.0, 0.02, False),
])
def test_code_schedule_of_the_2012_run(epoch, weights, conv1_w, conv1_b, bias, noise):
    cfg = resolve_train_config("code")
    assert cfg.epochs == 91                                   # "stopped after 91 epochs"
    rates = Schedule(cfg, NAMES).rates(epoch)
    assert rates.lr["fc7.weight"] == pytest.approx(weights)
    assert rates.lr["conv5.weight"] == pytest.approx(weights)
    assert rates.lr["conv1.weight"] == pytest.approx(conv1_w)
    assert rates.lr["conv1.bias"] == pytest.approx(conv1_b)
    assert rates.lr["fc8.bias"] == pytest.approx(bias)
    assert rates.color_noise is noise


# the ILSVRC-2010 run: 23 / 51 / 68 / 72 / 78, stopped after 93 epochs
@pytest.mark.parametrize("epoch, weights, conv1_w, noise", [
    (22, 1e-2, 1e-2, True), (23, 1e-3, 1e-3, True), (50, 1e-3, 1e-3, True), (51, 1e-4, 1e-4, True),
    (67, 1e-4, 1e-4, True), (68, 1e-4, 1e-5, False), (71, 1e-4, 1e-5, False), (72, 1e-4, 0.0, False),
    (77, 1e-4, 0.0, False), (78, 1e-5, 0.0, False), (92, 1e-5, 0.0, False),
])
def test_code_schedule_of_the_2010_run(epoch, weights, conv1_w, noise):
    for recipe in ("code", "paper"):    # the schedule brings its length whatever the recipe
        cfg = resolve_train_config(recipe, lr_schedule="code2010")
        assert cfg.epochs == 93
        rates = Schedule(cfg, NAMES).rates(epoch)
        assert rates.lr["fc6.weight"] == pytest.approx(weights * cfg.lr / 0.01)
        assert rates.lr["conv1.weight"] == pytest.approx(conv1_w)
        assert rates.color_noise is noise


def test_schedule_length_follows_the_schedule_unless_epochs_is_given():
    assert resolve_train_config("paper").epochs == 90
    assert resolve_train_config("paper", lr_schedule="code").epochs == 91
    assert resolve_train_config("code", lr_schedule="plateau").epochs == 90
    assert resolve_train_config("code", lr_schedule="code2010", epochs=40).epochs == 40


def test_code_schedule_scales_with_epochs():
    s = Schedule(resolve_train_config("code", epochs=182), NAMES)   # twice as long: boundaries x2
    assert s.rates(49).lr["fc6.weight"] == pytest.approx(1e-2)
    assert s.rates(50).lr["fc6.weight"] == pytest.approx(1e-3)
    assert s.rates(144).lr["conv1.weight"] == pytest.approx(0.0)
    assert s.rates(143).lr["conv1.weight"] == pytest.approx(1e-5)


def test_state_round_trip():
    s = Schedule(resolve_train_config("paper", plateau_patience=1), NAMES)
    s.observe(0, 0.5), s.observe(1, 0.6)
    t = Schedule(resolve_train_config("paper", plateau_patience=1), NAMES)
    t.load_state_dict(s.state_dict())
    assert t.rates(2).lr == s.rates(2).lr and t.state == s.state


def test_one_based_reading_of_the_notes_moves_every_boundary_one_epoch_earlier():
    """The notes' "epoch 25" read as counted from 1 (--code-epoch-base 1): the 25th epoch,
    0-based 24, is the first at 0.001; and so on for every boundary."""
    zero = Schedule(resolve_train_config("code"), NAMES)
    one = Schedule(resolve_train_config("code", code_epoch_base=1), NAMES)
    for epoch in range(91):
        assert one.rates(epoch).lr == zero.rates(epoch + 1).lr or epoch == 90
        assert one.rates(epoch).color_noise == zero.rates(epoch + 1).color_noise or epoch == 90
    assert one.rates(23).lr["fc6.weight"] == pytest.approx(1e-2)
    assert one.rates(24).lr["fc6.weight"] == pytest.approx(1e-3)
    assert one.rates(71).lr["conv1.weight"] == 0.0 and zero.rates(71).lr["conv1.weight"] > 0


# Paper 6: "stopped improving with the current learning rate". Patience 2: the run's best (0.5,
# epoch 0) is never beaten again, so "run" drops every two epochs; since each drop, every epoch
# beats the last, so "since-drop" drops once.
ERRORS = [0.5, 0.6, 0.6, 0.55, 0.52, 0.51, 0.505]
DROPS = {"run": [2, 4, 6], "since-drop": [2]}


@pytest.mark.parametrize("best", ["run", "since-drop"])
def test_plateau_best_reads_improving_against_the_run_or_the_current_rate(best):
    s = Schedule(resolve_train_config("paper", plateau_patience=2, plateau_best=best), NAMES)
    dropped = [e for e, err in enumerate(ERRORS) if s.observe(e, err)]
    assert dropped == DROPS[best]
    assert [h["epoch"] for h in s.state.history] == DROPS[best]
    assert s.rates(len(ERRORS)).lr["fc6.weight"] == pytest.approx(0.01 * 0.1 ** len(DROPS[best]))


@pytest.mark.parametrize("best", ["run", "since-drop"])
@pytest.mark.parametrize("stop", range(1, len(ERRORS)))
def test_plateau_resumed_anywhere_drops_where_the_whole_run_does(best, stop):
    """Killed after epoch `stop` - 1 (the state through a checkpoint file, loaded as --resume
    loads it): the resumed schedule drops at the same epochs under either reading, the best
    since a drop (inf just after one) included."""
    import io

    import torch

    cfg = resolve_train_config("paper", plateau_patience=2, plateau_best=best)
    first = Schedule(cfg, NAMES)
    dropped = [e for e in range(stop) if first.observe(e, ERRORS[e])]
    buffer = io.BytesIO()
    torch.save({"schedule": first.state_dict()}, buffer)
    buffer.seek(0)
    resumed = Schedule(cfg, NAMES)
    resumed.load_state_dict(torch.load(buffer, weights_only=True)["schedule"])
    assert resumed.state == first.state
    dropped += [e for e in range(stop, len(ERRORS)) if resumed.observe(e, ERRORS[e])]
    assert dropped == DROPS[best]
