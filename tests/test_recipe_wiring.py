"""The recipe's augmentation settings reach the augmenter the trainer builds (the augmenter's
own rules are tested in test_augment.py: a setting dropped on the way would train `--recipe
code` with the paper's noise or crops, and no test there would see it), and a run recorded
before a training setting existed resumes only with the value it had then."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alexnet_cli.config import resolve_model_config, resolve_train_config, to_dict
from alexnet_cli.errors import AlexnetError
from alexnet_cli.pca import read_pca
from alexnet_cli.progress import NullReporter
from alexnet_cli.train import RunOptions, Trainer
from alexnet_cli.train_state import check_resumable


def _augment(data, out, recipe: str, **train):
    trainer = Trainer(data, out, resolve_model_config(recipe), resolve_train_config(recipe, batch_size=8, **train),
                      RunOptions(device="cpu"), recipe, NullReporter())
    return trainer.augment


@pytest.mark.parametrize("recipe, offsets, chunk, mean_crop, pca_scale", [
    ("paper", 32, 1, "crop", "paper"), ("code", 33, 32, "center", "code")])
def test_the_trainer_hands_the_recipes_augmentation_to_the_augmenter(tiny_data, tmp_path, recipe, offsets, chunk,
                                                                   mean_crop, pca_scale):
    augment = _augment(tiny_data, tmp_path / "run", recipe)
    assert augment.offsets == (offsets, offsets) and augment.chunk == chunk
    assert (augment.mean_crop, augment.pca_scale, augment.pca_std) == (mean_crop, pca_scale, 0.1)
    pca = read_pca(tiny_data)
    eigenvalues = torch.tensor(pca.eigenvalues, dtype=torch.float32).clamp(min=0)
    want = 0.1 * eigenvalues / 255.0 if recipe == "paper" else 0.1 * eigenvalues.sqrt()
    torch.testing.assert_close(augment.noise_scale, want)
    torch.testing.assert_close(augment.eigenvectors, torch.tensor(pca.eigenvectors, dtype=torch.float32))


def test_settings_given_to_train_reach_the_augmenter(tiny_data, tmp_path):
    augment = _augment(tiny_data, tmp_path / "run", "paper", crop_offsets=33, aug_chunk=4, pca_std=0.3,
                       mean_crop="channel", pca_scale="code")
    assert augment.offsets == (33, 33) and augment.chunk == 4 and augment.pca_std == 0.3
    assert (augment.mean_crop, augment.pca_scale) == ("channel", "code")
    assert _augment(tiny_data, tmp_path / "off", "paper", pca_aug=False).noise_scale is None


def _checkpoint(train: dict) -> dict:
    return {"optimizer": {}, "trainer": {},
            "config": {"model": to_dict(resolve_model_config("paper")), "train": train}}


def test_a_run_from_before_crop_offsets_resumes_only_with_33(tmp_path):
    """Runs written before `crop_offsets` existed drew offsets 0..32: resuming one with the
    paper's 32 would change its augmentation halfway, so it is refused, naming the setting and
    the value the run has; with 33 it resumes."""
    old = to_dict(resolve_train_config("paper"))
    del old["crop_offsets"]
    now = {"model": to_dict(resolve_model_config("paper")), "train": to_dict(resolve_train_config("paper")),
           "run": {"seed": 0, "decode": "none", "val_split": "val"}, "world_size": 1}
    with pytest.raises(AlexnetError) as refused:
        check_resumable(tmp_path / "last.pt", _checkpoint(old), now)
    assert "other train settings (`crop_offsets` 33, not 32)" in str(refused.value)
    assert "crop_offsets" in refused.value.mentions
    now["train"] = to_dict(resolve_train_config("paper", crop_offsets=33))
    check_resumable(tmp_path / "last.pt", _checkpoint(old), now)


def test_an_on_off_setting_is_named_by_the_argument_that_gives_the_runs_value():
    """`--lrn true, not false` cannot be typed: an on/off setting is said as the run's flag."""
    from alexnet_cli.cli.flags import flag_message

    old = _checkpoint(to_dict(resolve_train_config("paper")))
    old["config"]["model"]["lrn"] = False
    now = {"model": to_dict(resolve_model_config("paper")), "train": to_dict(resolve_train_config("paper")),
           "run": {"seed": 0, "decode": "none", "val_split": "val"}, "world_size": 1}
    with pytest.raises(AlexnetError) as refused:
        check_resumable(Path("last.pt"), old, now)
    assert "other model settings (--no-lrn); resume" in flag_message(refused.value)


def test_a_run_older_than_two_settings_is_told_both_at_once(tmp_path):
    """A run from before `dropout_style` and `crop_offsets`: one refusal names both, so a single
    retry with both values resumes it."""
    old = _checkpoint(to_dict(resolve_train_config("paper")))
    del old["config"]["model"]["dropout_style"], old["config"]["train"]["crop_offsets"]
    now = {"model": to_dict(resolve_model_config("paper")), "train": to_dict(resolve_train_config("paper")),
           "run": {"seed": 0, "decode": "none", "val_split": "val"}, "world_size": 1}
    with pytest.raises(AlexnetError) as refused:
        check_resumable(tmp_path / "last.pt", old, now)
    assert ("other model and train settings (`dropout_style` inverted, not paper; `crop_offsets` 33, not 32)"
            in str(refused.value))
    assert {"dropout_style", "crop_offsets"} <= set(refused.value.mentions)
    now["model"] = to_dict(resolve_model_config("paper", dropout_style="inverted"))
    now["train"] = to_dict(resolve_train_config("paper", crop_offsets=33))
    check_resumable(tmp_path / "last.pt", old, now)
