"""The paper's update rule (section 6) and the parameter groups of both recipes."""

import torch

from alexnet_cli.config import resolve_train_config
from alexnet_cli.model import AlexNet
from alexnet_cli.optim import PaperSGD, param_groups


def test_paper_update_rule_by_hand():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = PaperSGD([w], lr=0.1, momentum=0.9, weight_decay=0.5)
    v = torch.zeros(2)
    w_ref = w.detach().clone()
    for g in ([0.3, 0.1], [-0.2, 0.4], [0.0, 1.0]):
        w.grad = torch.tensor(g)
        opt.step()
        v = 0.9 * v - 0.5 * 0.1 * w_ref - 0.1 * torch.tensor(g)   # v <- 0.9 v - wd lr w - lr grad
        w_ref = w_ref + v
        assert torch.allclose(w.detach(), w_ref, atol=1e-7)


def test_equals_torch_sgd_at_constant_lr_and_differs_after_a_drop():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(5))
    b = torch.nn.Parameter(a.detach().clone())
    ours = PaperSGD([a], lr=0.01, momentum=0.9, weight_decay=5e-4)
    theirs = torch.optim.SGD([b], lr=0.01, momentum=0.9, weight_decay=5e-4)
    grads = torch.randn(20, 5)
    for g in grads[:10]:
        a.grad, b.grad = g.clone(), g.clone()
        ours.step(), theirs.step()
    assert torch.allclose(a, b, atol=1e-6)
    for opt in (ours, theirs):
        opt.param_groups[0]["lr"] = 0.001
    a.grad, b.grad = grads[10].clone(), grads[10].clone()
    before = a.detach().clone()
    ours.step(), theirs.step()
    # the paper keeps the velocity accumulated at the old rate; torch rescales it by the new rate
    assert not torch.allclose(a, b, atol=1e-6)
    assert (a - before).abs().sum() > (b - before).abs().sum()


def test_groups_paper_and_code():
    model = AlexNet(num_classes=4)
    named = {n: [p] for n, p in model.named_parameters()}
    paper = {g["name"]: g for g in param_groups(named, resolve_train_config("paper"))}
    code = {g["name"]: g for g in param_groups(named, resolve_train_config("code"))}
    assert len(paper) == 16
    assert paper["conv1.bias"]["lr"] == 0.01 and paper["conv1.bias"]["weight_decay"] == 5e-4
    assert code["conv1.bias"]["lr"] == 0.02 and code["conv1.bias"]["weight_decay"] == 0.0
    assert code["fc6.weight"]["lr"] == 0.01 and code["fc6.weight"]["weight_decay"] == 5e-4
    assert all(g["momentum"] == 0.9 for g in code.values())


def test_groups_with_equal_settings_are_updated_together_with_the_same_result():
    """step() buckets groups by (lr, wd, momentum); the result must be each group's own rule,
    including a frozen group (lr 0) and groups whose rates differ."""
    torch.manual_seed(0)
    shapes = [(3, 4), (4,), (5,), (2, 2), (6,)]
    settings = [(0.01, 5e-4), (0.02, 0.0), (0.01, 5e-4), (0.0, 5e-4), (0.02, 0.0)]
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    refs = [p.detach().clone() for p in params]
    vs = [torch.zeros_like(r) for r in refs]
    opt = PaperSGD([{"params": [p], "lr": lr, "weight_decay": wd} for p, (lr, wd) in zip(params, settings)],
                   lr=0.01, momentum=0.9)
    for _ in range(4):
        grads = [torch.randn(s) for s in shapes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        for i, ((lr, wd), g) in enumerate(zip(settings, grads)):
            vs[i] = 0.9 * vs[i] - lr * wd * refs[i] - lr * g
            refs[i] = refs[i] + vs[i]
    for p, r in zip(params, refs):
        assert torch.allclose(p.detach(), r, atol=1e-7)
    assert torch.equal(params[3].detach() - refs[3], torch.zeros_like(refs[3]))   # frozen: unchanged
