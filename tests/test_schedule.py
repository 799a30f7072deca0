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


@pytest.mark.parametrize("epoch, weights, conv1_w, conv1_b, bias, noise", [
    (0, 1e-2, 1e-2, 0.02, 0.02, True),
    (24, 1e-2, 1e-2, 0.02, 0.02, True),
    (25, 1e-3, 1e-3, 0.02, 0.02, True),
    (51, 1e-4, 1e-4, 0.02, 0.02, True),
    (67, 1e-4, 1e-5, 0.02, 0.02, False),
    (72, 1e-4, 0.0, 0.0, 0.02, False),
    (79, 1e-5, 0.0, 0.0, 0.02, False),
    (90, 1e-5, 0.0, 0.0, 0.02, False),
])
def test_code_schedule_of_the_2012_run(epoch, weights, conv1_w, conv1_b, bias, noise):
    rates = Schedule(resolve_train_config("code"), NAMES).rates(epoch)
    assert rates.lr["fc7.weight"] == pytest.approx(weights)
    assert rates.lr["conv5.weight"] == pytest.approx(weights)
    assert rates.lr["conv1.weight"] == pytest.approx(conv1_w)
    assert rates.lr["conv1.bias"] == pytest.approx(conv1_b)
    assert rates.lr["fc8.bias"] == pytest.approx(bias)
    assert rates.color_noise is noise


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
