"""`alexnet summary` as a lecturer's table of the paper's section 4.5 and figure 2: each layer's
geometry read from the built network, the neurons as the paper counts them beside its own
figures, and the network a checkpoint holds (docs/public-surface.md)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from alexnet_cli.cli.app import app
from alexnet_cli.model import AlexNet
from test_docs import check_documented_json

# The paper's neurons per learned layer, conv1..fc8 (4.5, CACM reprint; NIPS prints 253,440 for conv1)
PAPER_LIST = [290_400, 186_624, 64_896, 64_896, 43_264, 4096, 4096, 1000]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def summary_doc(runner: CliRunner, *args: str) -> dict:
    result = runner.invoke(app, ["summary", "--json", *args])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    check_documented_json("summary", doc)
    return doc


def by_name(doc: dict) -> dict[str, dict]:
    return {layer["name"]: layer for layer in doc["layers"]}


def test_the_eight_layers_the_paper_counts_have_its_neurons(runner):
    from alexnet_cli.summary import PAPER_LAYER_NEURONS, PAPER_NEURON_LAYERS
    doc = summary_doc(runner)
    layers = by_name(doc)
    assert [layers[name]["neurons"] for name in PAPER_NEURON_LAYERS] == PAPER_LIST
    assert list(PAPER_LAYER_NEURONS) == PAPER_LIST
    assert PAPER_NEURON_LAYERS == ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
    # the total counts those eight only: the LRN and pool rows would add 1,046,272 more
    assert doc["paper_neurons"] == sum(PAPER_LIST) == 659_272
    assert sum(layer["neurons"] for layer in doc["layers"]) > doc["paper_neurons"]
    assert doc["paper_stated"] == {"neurons": 650_000, "params": 60_000_000}
    assert doc["checkpoint"] is None


def test_paper_neurons_follow_the_network(runner):
    """Measured, not a constant: one column halves conv1-conv4, ten classes shrink fc8."""
    doc = summary_doc(runner, "--columns", "1", "--num-classes", "10")
    assert doc["paper_neurons"] == 145_200 + 93_312 + 32_448 + 32_448 + 43_264 + 4096 + 4096 + 10
    assert doc["paper_stated"]["neurons"] == 650_000


def test_the_paper_recipe_geometry(runner):
    layers = by_name(summary_doc(runner))
    geometry = {name: (layer["kernel"], layer["stride"], layer["padding"], layer["groups"], layer["inputs"])
                for name, layer in layers.items()}
    assert geometry == {
        "conv1": ("11x11x3", 4, [2, 2, 2, 2], 1, "image"),
        "lrn1": (None, None, None, 2, "own column"),
        "pool1": ("3x3", 2, [0, 0, 0, 0], None, "own map"),
        "conv2": ("5x5x48", 1, [2, 2, 2, 2], 2, "own column"),
        "lrn2": (None, None, None, 2, "own column"),
        "pool2": ("3x3", 2, [0, 0, 0, 0], None, "own map"),
        "conv3": ("3x3x256", 1, [1, 1, 1, 1], 1, "both columns"),
        "conv4": ("3x3x192", 1, [1, 1, 1, 1], 2, "own column"),
        "conv5": ("3x3x192", 1, [1, 1, 1, 1], 2, "own column"),
        "pool5": ("3x3", 2, [0, 0, 0, 0], None, "own map"),
        "fc6": (None, None, None, 1, "both columns"),
        "fc7": (None, None, None, 1, "both columns"),
        "fc8": (None, None, None, 1, "both columns"),
    }


def test_the_geometry_is_read_from_the_built_network(runner):
    one = by_name(summary_doc(runner, "--columns", "1"))
    assert [one[n]["groups"] for n in ("conv2", "conv4", "conv5", "lrn1")] == [1, 1, 1, 1]
    assert (one["conv2"]["kernel"], one["conv3"]["kernel"], one["conv4"]["kernel"]) == ("5x5x48", "3x3x128", "3x3x192")
    assert {one[n]["inputs"] for n in ("conv2", "conv3", "fc6")} == {"all maps"}
    pool2 = by_name(summary_doc(runner, "--pool", "2"))
    assert [(pool2[n]["kernel"], pool2[n]["stride"]) for n in ("pool1", "pool2", "pool5")] == [("2x2", 2)] * 3
    code = by_name(summary_doc(runner, "--recipe", "code"))
    assert code["conv1"]["padding"] == [0, 3, 0, 3]        # the code's 3-pixel right/bottom overhang
    assert (code["rnorm2"]["kernel"], code["rnorm2"]["padding"]) == ("5x5", [2, 2, 2, 2])


def test_the_geometry_follows_a_changed_module():
    """The rows read each module's own attributes: change one and the row changes."""
    from alexnet_cli.config import ModelConfig
    from alexnet_cli.summary import meta_network, summarize
    model = meta_network(ModelConfig())
    model.conv3.groups = 2
    model.conv3.weight = torch.nn.Parameter(torch.empty(384, 128, 3, 3, device="meta"))
    model.pool1.padding = 1
    rows = {r.name: r for r in summarize(model)}
    assert (rows["conv3"].kernel, rows["conv3"].groups, rows["conv3"].inputs) == ("3x3x128", 2, "own column")
    assert rows["pool1"].padding == (1, 1, 1, 1) and rows["pool1"].output_shape == (96, 28, 28)


def test_the_table_fits_80_columns_and_shows_the_paper_beside_it(runner):
    result = runner.invoke(app, ["summary"])
    assert result.exit_code == 0, result.output
    table = [line for line in result.stdout.splitlines() if line[:1] in "┏┃┡│├└"]
    assert len(table) > 16 and max(len(line) for line in table) <= 80
    text = result.stdout
    for word in ("kernel", "stride", "pad", "sees", "11x11x3", "5x5x48", "3x3x256", "3x3x192", "own column",
                 "659,272", "650,000", "60 million", "60,965,224"):
        assert word in text, word
    lines = {line.split("│")[1].strip(): line for line in table if line.startswith("│")}
    assert "both" in lines["conv3"] and "3x3x256" in lines["conv3"]       # "columns" may take a second line
    assert "659,272" in lines["paper"] and "as counted" in lines["paper"] and "60,965,224" not in lines["paper"]
    assert "LRN" in lines["lrn1"] and "60,965,224" in lines["total"]


def _rows(runner: CliRunner, *args: str) -> dict[str, list[str]]:
    """The table's rows by layer name, each a list of its lines' cells (an LRN's take three lines)."""
    result = runner.invoke(app, ["summary", *args])
    assert result.exit_code == 0, result.output
    rows: dict[str, list[list[str]]] = {}
    name = None
    for line in result.stdout.splitlines():
        if not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        name = cells[0] or name
        rows.setdefault(name, []).append(cells)
    return rows


def test_the_table_starts_at_the_input_of_150528_values(runner):
    """4.5: "the network's input is 150,528-dimensional": the first row, above conv1."""
    rows = _rows(runner)
    assert list(rows)[:2] == ["input", "conv1"]
    [cells] = rows["input"]
    assert cells[6:8] == ["3x224x224", "150,528"] and cells[8] == "" and 3 * 224 * 224 == 150_528
    assert summary_doc(runner)["input_shape"] == [3, 224, 224]       # --json: unchanged, no input layer
    assert "input" not in by_name(summary_doc(runner))


def test_the_lrn_rows_show_the_constants_the_network_uses(runner):
    """4.3: n=5, k=2, alpha=1e-4, beta=0.75 in the kernel column; the code's alpha / n = 2e-5
    under --recipe code (or --lrn-alpha-over-n), said under the table; the JSON's kernel stays null."""
    for name in ("lrn1", "lrn2"):
        assert [cells[2] for cells in _rows(runner)[name]] == ["n=5 k=2", "α=1e-4", "β=0.75"]
    code = _rows(runner, "--recipe", "code")
    assert [cells[2] for cells in code["lrn1"]] == ["n=5 k=2", "α=2e-5", "β=0.75"]
    assert [cells[2] for cells in _rows(runner, "--lrn-alpha-over-n")["lrn2"]] == ["n=5 k=2", "α=2e-5", "β=0.75"]
    shown = runner.invoke(app, ["summary", "--recipe", "code"]).stdout
    assert "α is the code's 1e-4 / n (--lrn-alpha-over-n)" in " ".join(shown.split())
    assert "α is the code's" not in runner.invoke(app, ["summary"]).stdout
    assert "lrn1" not in _rows(runner, "--no-lrn")
    assert by_name(summary_doc(runner))["lrn1"]["kernel"] is None


def test_the_lrn_constants_are_read_from_the_network():
    from alexnet_cli.config import ModelConfig
    from alexnet_cli.summary import LrnParams, meta_network, summarize
    rows = {r.name: r for r in summarize(meta_network(ModelConfig(lrn_size=3, lrn_k=1.0, lrn_alpha=5e-4,
                                                                  lrn_beta=0.5)))}
    assert rows["lrn1"].lrn == rows["lrn2"].lrn == LrnParams(n=3, k=1.0, alpha=5e-4, beta=0.5)
    assert rows["conv1"].lrn is None and rows["pool1"].lrn is None
    code = {r.name: r for r in summarize(meta_network(ModelConfig(lrn_alpha_over_n=True)))}
    assert code["lrn1"].lrn.alpha == pytest.approx(2e-5)                # the one it multiplies by


def test_a_checkpoint_is_summarised_as_saved(runner, tmp_path, make_checkpoint):
    path = make_checkpoint(tmp_path / "model.pt", columns=1)
    doc = summary_doc(runner, str(path))
    layers = by_name(doc)
    assert doc["checkpoint"] == str(path) and doc["recipe"] == "paper"
    assert doc["changed"] == {"num_classes": 4, "columns": 1}
    assert layers["conv1"]["output_shape"] == [48, 55, 55] and layers["fc8"]["output_shape"] == [4]
    assert layers["conv2"]["groups"] == 1
    assert doc["params"] == sum(p.numel() for p in AlexNet(num_classes=4, columns=1).parameters())
    result = runner.invoke(app, ["summary", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"AlexNet of {path} (paper recipe, --num-classes 4, --columns 1)" in result.stdout


def test_a_bare_state_dict_is_inferred(runner, tmp_path):
    path = tmp_path / "bare.pt"
    with torch.device("meta"):
        model = AlexNet(num_classes=7)
    torch.save({k: torch.zeros(v.shape) for k, v in model.state_dict().items()}, path)
    result = runner.invoke(app, ["summary", "--json", str(path)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["recipe"] == "paper" and doc["changed"] == {"num_classes": 7, "dropout_style": "inverted"}
    assert by_name(doc)["fc8"]["output_shape"] == [7]
    assert "holds no network settings" in result.stderr


@pytest.mark.parametrize("flags, named", [(["--no-lrn"], "--no-lrn"), (["--pool", "2", "--columns", "1"], "--pool, --columns"),
                                          (["--recipe", "paper"], "--recipe"), (["--num-classes", "4"], "--num-classes")])
def test_network_options_with_a_checkpoint_are_bad_usage(runner, tmp_path, make_checkpoint, flags, named):
    path = make_checkpoint(tmp_path / "model.pt")
    result = runner.invoke(app, ["summary", str(path), *flags])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"Error: {named} cannot be combined with CHECKPOINT: summary shows the network the " \
                            "checkpoint holds, with its own settings\n"
    assert runner.invoke(app, ["summary", str(path), "--json"]).exit_code == 0     # --json is no network option


def test_a_bad_checkpoint_is_the_loaders_one_line(runner, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    result = runner.invoke(app, ["summary", str(junk)])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr.startswith(f"Error: {junk}: not a readable checkpoint (") and result.stderr.count("\n") == 1
    result = runner.invoke(app, ["summary", str(tmp_path)])      # a folder: bad usage, as for every CHECKPOINT
    assert result.exit_code == 2 and "is a folder" in result.stderr and "Traceback" not in result.output


def test_a_checkpoint_naming_an_unknown_recipe(runner, tmp_path, make_checkpoint):
    path = make_checkpoint(tmp_path / "model.pt")
    data = torch.load(path, weights_only=True)
    data["config"]["recipe"] = "mine"
    torch.save(data, path)
    result = runner.invoke(app, ["summary", str(path)])
    assert result.exit_code == 1
    assert result.stderr == f"Error: {path}: its config names the recipe 'mine', unknown here (paper, code)\n"


def test_num_classes_help_is_summarys_own(runner):
    help_text = " ".join(runner.invoke(app, ["summary", "--help"], env={"COLUMNS": "200"}).stdout.split())
    assert "Output classes (default: 1000, ILSVRC's)." in help_text and "the data's" not in help_text
    assert "CHECKPOINT" in help_text
    train_help = " ".join(runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).stdout.split())
    assert "Output classes (default: the data's; a value given must match it)." in train_help
