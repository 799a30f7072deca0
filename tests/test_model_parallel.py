"""The paper's two-column model parallelism equals the grouped single-device network."""

import pytest
import torch

from alexnet_cli.errors import AlexnetError
from alexnet_cli.model import AlexNet
from alexnet_cli.model_parallel import ColumnParallelAlexNet


@pytest.mark.parametrize("recipe", ["paper", "code"])
def test_two_columns_equal_grouped_network(recipe):
    torch.manual_seed(0)
    model = AlexNet(num_classes=7, recipe=recipe, dropout=0.0).double()
    columns = ColumnParallelAlexNet(model, ("cpu", "cpu")).double()
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64) * 60
    out, out_columns = model(x), columns(x)
    assert torch.allclose(out, out_columns, atol=1e-10)
    with torch.no_grad():
        assert torch.allclose(model.embed(x), columns.embed(x), atol=1e-10)
    # gradients agree too, parameter by parameter, in the single-device layout
    out.square().sum().backward()
    out_columns.square().sum().backward()
    for name, parts in columns.named_param_lists().items():
        grad = torch.cat([p.grad for p in parts])
        ref = dict(model.named_parameters())[name].grad
        assert torch.allclose(grad, ref, rtol=1e-8, atol=1e-10), name


def test_state_dict_round_trip_and_odd_class_count():
    model = AlexNet(num_classes=5)
    columns = ColumnParallelAlexNet(model, ("cpu", "cpu"))
    state = columns.single_state_dict()
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    other = AlexNet(num_classes=5)
    columns.load_single_state_dict(other.state_dict())
    assert all(torch.equal(columns.single_state_dict()[k], v) for k, v in other.state_dict().items())
    assert [p.shape[0] for p in columns.named_param_lists()["fc8.weight"]] == [3, 2]


def test_one_column_network_is_refused():
    with pytest.raises(AlexnetError, match="columns"):
        ColumnParallelAlexNet(AlexNet(num_classes=4, columns=1), ("cpu", "cpu"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_columns_on_cuda_match_cpu():
    torch.manual_seed(0)
    model = AlexNet(num_classes=10, dropout=0.0)
    x = torch.randn(4, 3, 224, 224) * 60
    ref = model(x)
    columns = ColumnParallelAlexNet(model, ("cuda:0", f"cuda:{torch.cuda.device_count() - 1}"))
    assert torch.allclose(columns(x.cuda()).cpu(), ref, rtol=1e-3, atol=1e-3)


def test_dropout_drops_each_fc7_unit_once_for_both_halves_of_fc8():
    torch.manual_seed(0)
    columns = ColumnParallelAlexNet(AlexNet(num_classes=6), ("cpu", "cpu")).train()
    seen = {}
    for name in ("a", "b"):
        getattr(columns, name).fc8.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, i[0]))
    columns(torch.randn(2, 3, 224, 224) * 60)
    assert torch.equal(seen["a"], seen["b"])          # one mask, seen by both columns' fc8
    assert (seen["a"] == 0).float().mean() > 0.4      # and dropout 0.5 did drop about half
