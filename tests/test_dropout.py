"""Dropout as the paper does it (section 5.2), inverted dropout as an option, and a frozen
layer that stays frozen (the released code skips the update of a layer whose rate is 0).

The paper: "setting to zero the output of each hidden neuron with probability 0.5 ... At test time,
we use all the neurons but multiply their outputs by 0.5". torch's nn.Dropout instead doubles the
kept outputs while training (inverted dropout); under the paper's fixed learning rate, init and
weight decay that is a different training, so it is only an option (`dropout_style="inverted"`).
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alexnet_cli.checkpoint import load_model, save_checkpoint
from alexnet_cli.config import model_config_from_dict, resolve_model_config, resolve_train_config
from alexnet_cli.model import AlexNet, Dropout
from alexnet_cli.optim import PaperSGD, param_groups


def _small_logits_net(style: str, seed: int = 0) -> AlexNet:
    torch.manual_seed(seed)
    return AlexNet(num_classes=5, dropout_style=style)


# ---------------------------------------------------------------- the layer

@pytest.mark.parametrize("p", [0.5, 0.3])
def test_paper_dropout_keeps_outputs_as_they_are_while_training(p):
    drop = Dropout(p, "paper").train()
    torch.manual_seed(5)
    h = torch.rand(64, 4096) + 0.5                    # no zeros of its own
    out = drop(h)
    kept = out != 0
    assert abs((~kept).float().mean().item() - p) < 0.02
    assert torch.equal(out[kept], h[kept])            # not 1 / (1 - p) times: the paper leaves them


@pytest.mark.parametrize("p", [0.5, 0.3])
def test_paper_dropout_multiplies_by_one_minus_p_at_test_time(p):
    h = torch.rand(8, 4096)
    assert torch.equal(Dropout(p, "paper").eval()(h), h * (1 - p))


def test_inverted_dropout_is_torchs():
    h = torch.rand(64, 4096) + 0.5
    torch.manual_seed(1)
    ours = Dropout(0.5, "inverted").train()(h)
    torch.manual_seed(1)
    assert torch.equal(ours, nn.Dropout(0.5).train()(h))
    assert torch.equal(Dropout(0.5, "inverted").eval()(h), h)


def test_the_network_uses_the_paper_dropout_by_default_in_both_recipes():
    for recipe in ("paper", "code"):
        net = AlexNet(num_classes=10, recipe=recipe)
        assert net.config.dropout_style == "paper"
        assert isinstance(net.drop6, Dropout) and net.drop6.style == net.drop7.style == "paper"
    assert AlexNet(num_classes=10, dropout_style="inverted").drop7.style == "inverted"


def test_the_network_scales_fc6_and_fc7_outputs_by_one_half_at_test_time():
    """Seen through forward hooks on the network's own modules: in eval mode drop6 and drop7
    hand fc7 and fc8 one half of their inputs; in training the kept ones unchanged."""
    net = _small_logits_net("paper")
    seen = {}
    for name in ("drop6", "drop7"):
        getattr(net, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, (i[0], o)))
    x = torch.randn(2, 3, 224, 224) * 50
    with torch.no_grad():
        net.eval()(x)
        for name, (i, o) in seen.items():
            assert (i > 0).any() and torch.equal(o, 0.5 * i), name
        net.train()(x)
        for name, (i, o) in seen.items():
            live = i != 0
            kept = o[live] != 0
            assert torch.equal(o[live][kept], i[live][kept]), name
            assert 0.3 < 1 - kept.float().mean().item() < 0.7, name


def test_embed_is_fc7_after_relu_before_the_test_time_scaling():
    net = _small_logits_net("paper").eval()
    x = torch.randn(2, 3, 224, 224) * 50
    with torch.no_grad():
        h6 = 0.5 * F.relu(net.fc6(net.conv_stack(x)))            # fc6's outputs, halved at test time
        assert torch.allclose(net.embed(x), F.relu(net.fc7(h6)), rtol=1e-5, atol=1e-5)
        assert torch.allclose(net(x), net.fc8(0.5 * net.embed(x)), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- one step of the paper's rule

def _lrn(x: torch.Tensor, groups: int, n=5, k=2.0, alpha=1e-4, beta=0.75) -> torch.Tensor:
    """The paper's LRN written out: a window over each column's maps, clipped at its edges."""
    cols = []
    for xc in x.chunk(groups, 1):
        c = xc.shape[1]
        sums = torch.stack([(xc[:, max(0, i - n // 2):min(c, i + n // 2 + 1)] ** 2).sum(1) for i in range(c)], 1)
        cols.append(xc / (k + alpha * sums) ** beta)
    return torch.cat(cols, 1)


def _paper_forward(w: dict[str, torch.Tensor], x: torch.Tensor, masks: dict[str, torch.Tensor]) -> torch.Tensor:
    """The paper's network with its dropout, in plain torch ops, the masks given."""
    h = F.max_pool2d(_lrn(F.relu(F.conv2d(x, w["conv1.weight"], w["conv1.bias"], stride=4, padding=2)), 2), 3, 2)
    h = F.max_pool2d(_lrn(F.relu(F.conv2d(h, w["conv2.weight"], w["conv2.bias"], padding=2, groups=2)), 2), 3, 2)
    h = F.relu(F.conv2d(h, w["conv3.weight"], w["conv3.bias"], padding=1))
    h = F.relu(F.conv2d(h, w["conv4.weight"], w["conv4.bias"], padding=1, groups=2))
    h = F.max_pool2d(F.relu(F.conv2d(h, w["conv5.weight"], w["conv5.bias"], padding=1, groups=2)), 3, 2)
    h = F.relu(h.flatten(1) @ w["fc6.weight"].T + w["fc6.bias"]) * masks["drop6"]      # kept as they are
    h = F.relu(h @ w["fc7.weight"].T + w["fc7.bias"]) * masks["drop7"]
    return h @ w["fc8.weight"].T + w["fc8.bias"]


def test_one_step_of_the_whole_network_equals_the_papers_rule_by_hand():
    """model + PaperSGD, one step from a non-zero velocity (so momentum counts), against the
    paper's dropout (the masks the model drew) and v <- 0.9 v - 0.0005 lr w - lr grad, w <- w + v
    written out. float64."""
    net = _small_logits_net("paper", seed=3).double().train()
    with torch.no_grad():                                  # livelier than N(0, 0.01): every term matters
        for layer in (net.fc6, net.fc7, net.fc8):
            layer.weight.mul_(3.0)
    cfg = resolve_train_config("paper")
    named = {name: [p] for name, p in net.named_parameters()}
    opt = PaperSGD(param_groups(named, cfg), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(0)
    ref = {name: p.detach().clone() for name, p in net.named_parameters()}
    vel = {name: 1e-3 * torch.randn(p.shape, generator=g, dtype=torch.float64) for name, p in ref.items()}
    for name, p in net.named_parameters():                 # the velocity of earlier steps
        opt.state[p]["velocity"] = vel[name].clone()
    seen = {}
    for name in ("drop6", "drop7"):
        getattr(net, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o != 0))
    x = torch.randn(2, 3, 224, 224, generator=g, dtype=torch.float64) * 40
    y = torch.tensor([1, 3])
    loss = F.cross_entropy(net(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    w = {k: v.clone().requires_grad_(True) for k, v in ref.items()}
    ref_loss = F.cross_entropy(_paper_forward(w, x, {k: m.double() for k, m in seen.items()}), y)
    assert torch.allclose(loss.detach(), ref_loss.detach(), rtol=1e-10)
    grads = dict(zip(w, torch.autograd.grad(ref_loss, list(w.values()))))
    for name, p in net.named_parameters():                 # in place: 58 M float64 numbers, no temporaries
        v = vel[name].mul_(0.9).sub_(ref[name], alpha=5e-4 * 0.01).sub_(grads[name], alpha=0.01)
        assert torch.allclose(p.detach(), v.add_(ref[name]), rtol=1e-9, atol=1e-12), name


def test_inverted_dropout_moves_fc8_further_than_the_papers():
    """The measurable difference: the same weights and data, one step; the inverted style moves
    fc8.weight much further (its kept inputs are doubled, and so are fc7's; 3x here)."""
    moved = {}
    for style in ("paper", "inverted"):
        net = _small_logits_net(style, seed=4).train()
        opt = PaperSGD(net.parameters(), lr=0.01)
        before = net.fc8.weight.detach().clone()
        torch.manual_seed(9)
        x = torch.randn(4, 3, 224, 224) * 50
        F.cross_entropy(net(x), torch.arange(4)).backward()
        opt.step()
        moved[style] = (net.fc8.weight.detach() - before).norm().item()
    assert moved["inverted"] / moved["paper"] > 1.8


# ---------------------------------------------------------------- frozen layers

def test_a_group_with_learning_rate_zero_is_not_updated_at_all():
    """The code's conv1 from epoch 72: rate 0 means no momentum step and no decay; the weights
    stay bitwise what they were, over several steps, while the other layers keep moving."""
    torch.manual_seed(0)
    params = {"conv1.weight": nn.Parameter(torch.randn(4, 3)), "fc6.weight": nn.Parameter(torch.randn(5))}
    opt = PaperSGD(param_groups({k: [p] for k, p in params.items()}, resolve_train_config("paper")), lr=0.01)
    for p in params.values():                         # one ordinary step: a non-zero velocity
        p.grad = torch.randn_like(p)
    opt.step()
    for group in opt.param_groups:
        if group["name"] == "conv1.weight":
            group["lr"] = 0.0
    frozen = params["conv1.weight"].detach().clone()
    velocity = opt.state[params["conv1.weight"]]["velocity"].clone()
    other = params["fc6.weight"].detach().clone()
    for _ in range(3):
        for p in params.values():
            p.grad = torch.randn_like(p)
        opt.step()
    assert torch.equal(params["conv1.weight"].detach(), frozen)
    assert torch.equal(opt.state[params["conv1.weight"]]["velocity"], velocity)
    assert not torch.equal(params["fc6.weight"].detach(), other)


# ---------------------------------------------------------------- files written before the option

class _OldAlexNet(AlexNet):
    """The network as the code before `dropout_style` built it: torch's nn.Dropout."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.drop6, self.drop7 = nn.Dropout(self.config.dropout), nn.Dropout(self.config.dropout)


def _old_checkpoint(path, seed=0, classes=tuple("abcd")):
    torch.manual_seed(seed)
    old = _OldAlexNet(num_classes=4)
    config = dataclasses.asdict(old.config)
    del config["dropout_style"]                      # the field did not exist then
    save_checkpoint(path, {"model": old.state_dict(), "classes": list(classes), "mean_image": torch.zeros(256, 256, 3),
                           "config": {"recipe": "paper", "model": config, "train": {"mean_crop": "crop"}}})
    return old.eval()


def test_an_old_checkpoint_loads_with_inverted_dropout_and_gives_the_same_outputs(tmp_path):
    old = _old_checkpoint(tmp_path / "old.pt")
    loaded = load_model(tmp_path / "old.pt").model
    assert loaded.config.dropout_style == "inverted"
    x = torch.randn(3, 3, 224, 224) * 50
    with torch.no_grad():
        assert torch.equal(loaded(x), old(x))
        assert torch.equal(loaded.embed(x), old.embed(x))
        new_style = AlexNet(config=dataclasses.replace(loaded.config, dropout_style="paper")).eval()
        new_style.load_state_dict(loaded.state_dict())
        assert not torch.allclose(new_style(x), old(x))     # the style matters: it must come from the file


def test_an_old_checkpoint_evaluates_to_the_same_errors(tmp_path, tiny_data):
    from alexnet_cli.evaluate import evaluate, evaluate_model
    from alexnet_cli.loader import ShardLoader

    from alexnet_cli.shards import read_manifest

    old = _old_checkpoint(tmp_path / "old.pt", seed=2, classes=read_manifest(tiny_data).classes)
    with torch.no_grad():
        for layer in (old.fc6, old.fc7, old.fc8):        # a network whose errors depend on the fc layers
            layer.weight.mul_(20)
    save_checkpoint(tmp_path / "old.pt", {**torch.load(tmp_path / "old.pt", weights_only=True),
                                          "model": old.state_dict()})
    result = evaluate([tmp_path / "old.pt"], tiny_data, crops=1, bf16=False, device="cpu")
    loader = ShardLoader(tiny_data, "val", batch_size=16, shuffle=False, workers=1)
    before = evaluate_model(old, loader, torch.zeros(256, 256, 3), crops=1, bf16=False)
    assert (result.top1_error, result.top5_error, result.n) == (before.top1_error, before.top5_error, before.n)


def test_model_config_from_an_old_file_and_a_new_one():
    assert model_config_from_dict({"num_classes": 4}).dropout_style == "inverted"
    assert model_config_from_dict({"num_classes": 4, "dropout_style": "paper"}).dropout_style == "paper"
    with pytest.raises(Exception, match="^dropout_style must be one of"):
        resolve_model_config("paper", dropout_style="scaled")


# ---------------------------------------------------------------- recorded in every run

def test_the_style_is_recorded_and_an_old_run_resumes_only_with_its_style(tiny_data, tmp_path):
    from typer.testing import CliRunner

    from alexnet_cli.checkpoint import load_checkpoint
    from alexnet_cli.cli.app import app

    runner = CliRunner()
    out = tmp_path / "run"
    args = ["train", str(tiny_data), "--out", str(out), "--device", "cpu", "--batch-size", "8", "--epochs", "2"]
    assert runner.invoke(app, [*args, "--max-steps", "1"]).exit_code == 0
    last = out / "checkpoints" / "last.pt"
    assert json.loads((out / "config.json").read_text())["model"]["dropout_style"] == "paper"
    ckpt = load_checkpoint(last)
    assert ckpt["config"]["model"]["dropout_style"] == "paper"
    # the same run as the code before the option wrote it: no dropout_style anywhere
    del ckpt["config"]["model"]["dropout_style"]
    save_checkpoint(last, {k: v for k, v in ckpt.items() if k not in ("format", "version")})
    refused = runner.invoke(app, [*args, "--max-steps", "2", "--resume"])
    assert refused.exit_code == 1 and "other model settings (--dropout-style inverted, not paper)" in refused.output
    resumed = runner.invoke(app, [*args, "--max-steps", "2", "--resume", "--dropout-style", "inverted"])
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(last)["trainer"]["step"] == 2
