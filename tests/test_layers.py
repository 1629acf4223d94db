"""`measure layers`: the profiler's rows name a model's layers, partition its CPU time and find the
heaviest layer; the CSV; bad input; the command on a tiny trained zoo (and on the bundled digits
profile when its zoo has been trained).

The models are built here so that one layer does far more arithmetic than the others (a Linear of
256x4096 against one of 32x256: 64 times the multiply-adds), which is what the bottleneck checks
rest on; shares must add up to 100% within 1e-6 points, since the rows partition the time.
"""

from __future__ import annotations

import argparse
from collections import OrderedDict
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from measure import layers
from measure.layers import (CSV_COLUMNS, OTHER, RANGE_PREFIX, LayerProfile, LayerRow, format_table,
                            profile_layers, write_csv)
from traces.errors import InputError

REPO = Path(__file__).resolve().parents[1]
BATCH = 16


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(small=nn.Linear(32, 256), act=nn.ReLU(), big=nn.Linear(256, 4096))).eval()


def profiled(model: nn.Module, inputs: torch.Tensor, **kwargs) -> LayerProfile:
    """On one thread, as the bundled profiles run: with more, the first layer of each run also pays
    for waking the thread pool, which on a busy machine can outweigh a 64-fold lighter layer."""
    def forward(_k: int):
        with torch.inference_mode():
            return model(inputs)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return profile_layers(model, forward, batch_size=inputs.shape[0], **{"runs": 3, **kwargs})
    finally:
        torch.set_num_threads(threads)


def shares_sum(result: LayerProfile) -> float:
    return sum(row.share_pct for row in result.rows)


def by_name(result: LayerProfile) -> dict[str, LayerRow]:
    return {row.name: row for row in result.rows}


def test_module_rows_name_each_layer_once_per_run_and_the_heaviest_is_the_bottleneck():
    result = profiled(mlp(), torch.randn(BATCH, 32))
    rows = by_name(result)
    assert result.by == "module" and {"small", "act", "big"} <= set(rows) <= {"small", "act", "big", OTHER}
    assert all(rows[name].calls == 1 for name in ("small", "act", "big"))
    assert shares_sum(result) == pytest.approx(100.0, abs=1e-6)
    assert sum(row.self_cpu_ms for row in result.rows) == pytest.approx(result.total_cpu_ms, rel=1e-9)
    assert [row.self_cpu_ms for row in result.rows] == sorted((row.self_cpu_ms for row in result.rows), reverse=True)
    assert result.bottleneck.name == "big" and rows["big"].share_pct > 50.0
    assert result.bottleneck_line() == f"big takes {rows['big'].share_pct:.0f}% of the time at batch {BATCH}"


class Wrapped(nn.Module):
    """A dominant wrapper (``body``), a shared activation called twice, a ModuleList never called whole."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 4096))
        self.blocks = nn.ModuleList([nn.Linear(4096, 8), nn.Linear(8, 8)])
        self.act = nn.ReLU()

    def forward(self, x):
        x = self.act(self.body(x))
        for block in self.blocks:
            x = block(x)
        return self.act(x)


def test_a_dominant_wrapper_opens_into_its_parts_and_calls_count_per_module():
    model = Wrapped().eval()
    result = profiled(model, torch.randn(BATCH, 32))
    rows = by_name(result)
    assert {"body.0", "body.1", "body.2", "blocks", "act"} <= set(rows) and "body" not in rows
    assert rows["act"].calls == 2              # one module, called twice per run
    assert rows["blocks"].calls == 2           # a ModuleList is never called: its two Linears are
    assert result.bottleneck.name == "body.2"
    assert shares_sum(result) == pytest.approx(100.0, abs=1e-6)


def test_operator_rows_count_each_operator_call_and_leave_no_hooks_behind():
    model = mlp()
    result = profiled(model, torch.randn(BATCH, 32), by="operator")
    rows = by_name(result)
    assert rows["aten::addmm"].calls == 2      # two Linear layers with bias on a 2-D input
    assert rows["aten::relu"].calls == 1
    assert not any(name.startswith(RANGE_PREFIX) for name in rows)
    assert result.bottleneck.name == "aten::addmm"
    assert shares_sum(result) == pytest.approx(100.0, abs=1e-6)
    profiled(model, torch.randn(BATCH, 32))    # by module: hooks installed, then removed
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_an_fx_quantized_model_is_profiled_by_operator_unless_modules_are_asked_for():
    from measure.models import SmallCNN
    from measure.variants import quantize_int8

    torch.manual_seed(0)
    images = torch.randn(64, 1, 8, 8)
    graph = quantize_int8(SmallCNN(1, 8, 10, (4, 8)).eval(), images)
    assert isinstance(graph, torch.fx.GraphModule)
    default = profiled(graph, images[:BATCH])
    assert default.by == "operator" and "by operator" in default.note
    assert any(name.startswith("quantized::conv2d") for name in by_name(default))
    modules = profiled(graph, images[:BATCH], by="module")
    leaves = {name for name, _ in graph.named_modules() if name}
    assert set(by_name(modules)) - {OTHER} <= leaves and "(other)" in modules.note
    assert shares_sum(modules) == pytest.approx(100.0, abs=1e-6)
    dynamic = quantize_int8(mlp(), torch.randn(8, 32))  # no convolution: dynamic, modules kept
    result = profiled(dynamic, torch.randn(BATCH, 32))
    assert result.by == "module" and result.bottleneck.name == "big" and not result.note


def test_the_table_sums_the_rows_it_does_not_show():
    rows = tuple(LayerRow(f"l{i}", ms, ms * 10.0, 1.0) for i, ms in enumerate((4.0, 3.0, 2.0, 1.0)))
    result = LayerProfile("module", 8, 5, rows, 10.0, 9.0)
    lines = format_table(result, top=2).splitlines()
    assert [line.split()[0] for line in lines] == ["module", "l0", "l1", "(2", "total"]
    assert lines[3].split()[2:5] == ["3.000", "30.0%", "2"]    # l2 + l3
    assert lines[4].split()[1:] == ["10.000", "100.0%"]


def test_the_csv_has_the_documented_columns_and_is_replaced_only_with_force(tmp_path):
    result = profiled(mlp(), torch.randn(BATCH, 32))
    path = write_csv(result, "mlp/fp32/cpu", tmp_path / "layers.csv", force=False)
    table = pd.read_csv(path, comment="#")
    assert tuple(table.columns) == CSV_COLUMNS
    assert list(table["name"]) == [row.name for row in result.rows]
    assert set(table["variant"]) == {"mlp/fp32/cpu"} and set(table["batch_size"]) == {BATCH}
    assert table["share_pct"].sum() == pytest.approx(100.0, abs=1e-4)
    with pytest.raises(InputError, match="--force"):
        write_csv(result, "mlp/fp32/cpu", path, force=False)
    write_csv(result, "mlp/fp32/cpu", path, force=True)
    foreign = tmp_path / "mine.csv"
    foreign.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="not written by us"):
        write_csv(result, "mlp/fp32/cpu", foreign, force=True)
    assert foreign.read_text() == "a,b\n1,2\n"


def run_layers(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    layers.add_arguments(parser)
    return layers.run(parser.parse_args(list(argv)))


def write_profile(tmp_path: Path, zoo: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(f"""name = "tiny"
zoo_dir = "{zoo}"
[data]
task = "digits"
[latency]
warmup_runs = 1
[[variants]]
model = "cnn-small"
precisions = ["fp32", "int8"]
""")
    return path


@pytest.mark.parametrize("argv, where", [(["--batch", "0"], "--batch"), (["--batch", "2", "--runs", "0"], "--runs")])
def test_a_bad_batch_size_or_run_count_is_refused_before_anything_loads(tmp_path, argv, where):
    with pytest.raises(InputError) as error:
        run_layers(str(tmp_path / "missing.toml"), "--variant", "cnn-small/fp32/cpu", *argv)
    assert error.value.where == where and "from 1 to" in error.value.problem


def test_an_unknown_variant_a_bad_profile_and_an_untrained_zoo_are_one_line_each(tmp_path):
    profile = write_profile(tmp_path, tmp_path / "empty-zoo")
    with pytest.raises(InputError) as error:
        run_layers(str(profile), "--variant", "resnet18/fp32/cpu", "--batch", "2")
    assert error.value.where == "--variant" and "'resnet18/fp32/cpu'" in error.value.problem
    assert "cnn-small/fp32/cpu, cnn-small/int8/cpu" in error.value.problem
    with pytest.raises(InputError, match=r"run `measure train .*tiny\.toml` first"):
        run_layers(str(profile), "--variant", "cnn-small/fp32/cpu", "--batch", "2")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(InputError, match="invalid TOML"):
        run_layers(str(bad), "--variant", "cnn-small/fp32/cpu", "--batch", "2")


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    from measure.data import DataConfig
    from measure.train import TrainConfig
    from measure.zoo import train_zoo

    path = tmp_path_factory.mktemp("zoo")
    train_zoo("digits", path, DataConfig.tiny(), TrainConfig.tiny(), models=["cnn-small"], tiny=True)
    return path


def test_the_command_profiles_a_trained_variant_and_writes_its_csv(tmp_path, tiny_zoo, capsys):
    profile = write_profile(tmp_path, tiny_zoo)
    out = tmp_path / "layers.csv"
    assert run_layers(str(profile), "--variant", "cnn-small/fp32/cpu", "--batch", "4", "--runs", "2",
                      "--out", str(out)) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out, comment="#", dtype={"name": str})
    named = table[table["name"] != OTHER]
    assert set(named["name"]) <= {str(i) for i in range(10)}   # SmallCNN is a Sequential: its children
    top = named.iloc[0]
    assert f"{top['name']} takes {top['share_pct']:.0f}% of the time at batch 4" in printed
    assert table["share_pct"].sum() == pytest.approx(100.0, abs=1e-4)
    assert run_layers(str(profile), "--variant", "cnn-small/int8/cpu", "--batch", "4", "--runs", "2") == 0
    assert "by operator" in capsys.readouterr().out


@pytest.mark.skipif(not (REPO / "zoo" / "digits" / "zoo.json").is_file(),
                    reason="zoo/digits/zoo.json is missing: train it with `measure train examples/profiles/digits-cpu.toml`")
def test_the_bundled_digits_profile_reads_resnet18_by_stage(capsys):
    profile = REPO / "examples" / "profiles" / "digits-cpu.toml"
    assert run_layers(str(profile), "--variant", "resnet18/fp32/cpu", "--batch", "8", "--runs", "2") == 0
    printed = capsys.readouterr().out
    rows = {line.split()[0] for line in printed.splitlines() if line.startswith("layer")}
    # each stage is a row, or its two blocks are when it holds over half of the time
    assert {name.split(".")[0] for name in rows} == {"layer1", "layer2", "layer3", "layer4"}
    assert all(name.count(".") == 0 or name.split(".")[1] in ("0", "1") for name in rows)
