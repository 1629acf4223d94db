"""`measure layers`: the profiler's rows name a model's layers, partition its CPU time and find the
heaviest layer; the CSV; bad input; the command on a tiny trained zoo (a small CNN, and ResNet-18 read by
stage); TorchScript variants by operator; ONNX Runtime variants
under ONNX Runtime's own profiler (a synthetic trace, then real sessions when onnxruntime is here).

The models are built here so that one layer does far more arithmetic than the others (a Linear of
256x4096 against one of 32x256: 64 times the multiply-adds), which is what the bottleneck checks
rest on; shares must add up to 100% within 1e-6 points, since the rows partition the time.
"""

from __future__ import annotations

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

from conftest import write_profile

BATCH = 16


def mlp(big_out: int = 4096) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(small=nn.Linear(32, 256), act=nn.ReLU(), big=nn.Linear(256, big_out))).eval()


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
    # 2,048x the small layer's arithmetic, over 10 runs: a scheduling hiccup in the small layer (about
    # 0.1 ms of work) cannot outweigh it, as it once did at 128x over 3 runs on a busy machine
    result = profiled(mlp(big_out=65536), torch.randn(BATCH, 32), runs=10)
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
    # no convolution: dynamic, modules kept. Dynamic INT8 shrinks `big` more than `small` (whose time
    # is mostly fixed per call), so `big` is made 4x wider here: a busy machine's hiccup during
    # `small` once made it the bottleneck at 4096
    dynamic = quantize_int8(mlp(big_out=16384), torch.randn(8, 32))
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
    """The subcommand's flags as `measure layers` parses them; its errors raised, not printed."""
    from measure.cli import build_parser

    return layers.run(build_parser().parse_args(["layers", *argv]))


def layers_profile(tmp_path: Path, zoo: Path, backends: tuple[str, ...] = ("eager",)) -> Path:
    return write_profile(tmp_path / "tiny.toml", zoo, precisions=("fp32", "int8"), latency={"warmup_runs": 1},
                         backends=backends)


@pytest.mark.parametrize("argv, where", [(["--batch", "0"], "--batch"), (["--batch", "2", "--runs", "0"], "--runs")])
def test_a_bad_batch_size_or_run_count_is_refused_before_anything_loads(tmp_path, argv, where):
    with pytest.raises(InputError) as error:
        run_layers(str(tmp_path / "missing.toml"), "--variant", "cnn-small/fp32/cpu", *argv)
    assert error.value.where == where and "from 1 to" in error.value.problem


def test_an_unknown_variant_a_bad_profile_and_an_untrained_zoo_are_one_line_each(tmp_path):
    profile = layers_profile(tmp_path, tmp_path / "empty-zoo")
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


def test_the_command_profiles_a_trained_variant_and_writes_its_csv(tmp_path, zoo, capsys):
    profile = layers_profile(tmp_path, zoo)
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


def test_a_resnet18_variant_reads_by_stage(tmp_path_factory, capsys):
    """ResNet-18's stages are the rows (or a stage's blocks, when it holds over half of the time),
    whatever its width: a tiny one (one block a stage) is trained here so the test needs no zoo."""
    from measure.data import DataConfig
    from measure.train import TrainConfig
    from measure.zoo import train_zoo

    zoo = tmp_path_factory.mktemp("resnet_zoo")
    train_zoo("digits", zoo, DataConfig.tiny(), TrainConfig.tiny(), models=["resnet18"], tiny=True)
    profile = write_profile(tmp_path_factory.mktemp("profile") / "resnet.toml", zoo, model="resnet18")
    assert run_layers(str(profile), "--variant", "resnet18/fp32/cpu", "--batch", "8", "--runs", "2") == 0
    printed = capsys.readouterr().out
    rows = {line.split()[0] for line in printed.splitlines() if line.startswith("layer")}
    assert {name.split(".")[0] for name in rows} == {"layer1", "layer2", "layer3", "layer4"}
    assert all(name.count(".") == 0 or name.split(".")[1] in ("0", "1") for name in rows)


# ---- TorchScript and ONNX Runtime variants ---------------------------------------------------

def test_a_torchscript_variant_is_profiled_by_operator_and_refuses_modules_before_building(tmp_path, zoo, capsys):
    profile = layers_profile(tmp_path, zoo, ("torchscript",))
    with pytest.raises(InputError) as error:
        run_layers(str(profile), "--variant", "cnn-small/fp32/cpu/torchscript", "--batch", "4", "--by", "module")
    assert error.value.where == "--by" and "by operator" in error.value.problem
    out = tmp_path / "ts.csv"
    assert run_layers(str(profile), "--variant", "cnn-small/fp32/cpu/torchscript", "--batch", "4", "--runs", "2",
                      "--out", str(out)) == 0
    assert "TorchScript" in capsys.readouterr().out
    table = pd.read_csv(out, comment="#")
    assert set(table["by"]) == {"operator"} and any(name.startswith("aten::") for name in table["name"])
    assert table["share_pct"].sum() == pytest.approx(100.0, abs=1e-4)


def synthetic_trace(runs: list[list[tuple[str, str, int]]], gap_us: int = 7) -> list[dict]:
    """An ONNX Runtime trace of these runs (each a list of (node, op type, microseconds)): per run a
    ``model_run`` span enclosing its kernels, ``gap_us`` of session time before each kernel, and
    the zero-length fence events older versions write."""
    events, ts = [{"cat": "Session", "name": "session_initialization", "ts": 0, "dur": 50}], 100
    for kernels in runs:
        start = ts
        for node, op, dur in kernels:
            ts += gap_us
            for suffix, length in (("_fence_before", 0), ("_kernel_time", dur), ("_fence_after", 0)):
                events.append({"cat": "Node", "name": node + suffix, "ts": ts, "dur": length,
                               "args": {"op_name": op, "provider": "CPUExecutionProvider"}})
                ts += length
        ts += gap_us
        events.append({"cat": "Session", "name": "model_run", "ts": start, "dur": ts - start})
        ts += 1000
    return events


def test_trace_totals_count_only_the_last_runs_kernels_and_partition_their_wall_time():
    from measure.layers import SESSION
    from measure.layers_ort import trace_totals

    check_run = [("conv_a", "Conv", 900), ("fc", "Gemm", 900)]   # the check when built: not counted
    run = [("conv_a", "Conv", 40), ("relu_b", "Conv", 25), ("fc", "Gemm", 10), ("flat", "Reshape", 3)]
    events = synthetic_trace([check_run, run, run, run])
    wall_us = [200.0, 210.0, 220.0]
    by_op = trace_totals(events, 3, "operator", wall_us)
    assert by_op["Conv"] == (3 * 65.0, 6.0) and by_op["Gemm"] == (30.0, 3.0) and by_op["Reshape"] == (9.0, 3.0)
    run_us = sum(dur for _, _, dur in run) + 7 * (len(run) + 1)  # the span: kernels and the gaps before, after
    assert by_op[SESSION] == (3 * (run_us - 78), 0.0)
    assert by_op[OTHER] == (sum(wall_us) - 3 * run_us, 0.0)
    assert sum(us for us, _ in by_op.values()) == pytest.approx(sum(wall_us))
    by_node = trace_totals(events, 3, "node", wall_us)
    assert {name: calls for name, (_, calls) in by_node.items()} == {
        "conv_a": 3.0, "relu_b": 3.0, "fc": 3.0, "flat": 3.0, SESSION: 0.0, OTHER: 0.0}
    assert by_node["relu_b"][0] == 75.0
    with pytest.raises(RuntimeError, match="holds 4 runs, expected 5"):
        trace_totals(events, 5, "operator", wall_us + [1.0, 1.0])


def onnxruntime_or_skip():
    for module in ("onnx", "onnxruntime", "onnxscript"):
        pytest.importorskip(module, reason=f"{module} is not installed: the onnxruntime backend needs "
                                           "pip install -e '.[measure]' (onnx, onnxruntime, onnxscript)")


def test_ort_nodes_run_once_per_run_and_the_rows_sum_to_the_kernels_of_the_last_runs(tmp_path):
    onnxruntime_or_skip()
    from measure import backends
    from measure.layers import SESSION
    from measure.layers_ort import profile_session, profiling_sessions
    from measure.models import SmallCNN

    torch.manual_seed(0)
    images = torch.randn(64, 1, 8, 8)
    with profiling_sessions(tmp_path / "trace"):
        model = backends.onnxruntime_model(SmallCNN(1, 8, 10, (4, 8)).eval(), "fp32", images, threads=1)
    assert backends.session_options.__name__ == "session_options"   # the harness's own again
    runs = 3
    result = profile_session(model.session, lambda k: model(images[k:k + BATCH]), batch_size=BATCH,
                             by="module", runs=runs, warmup_runs=2)
    rows = by_name(result)
    nodes = [name for name in rows if name not in (OTHER, SESSION)]
    assert result.by == "node" and result.profiler == "onnxruntime" and nodes
    assert all(rows[name].calls == 1 for name in nodes)
    assert shares_sum(result) == pytest.approx(100.0, abs=1e-6)
    assert sum(row.self_cpu_ms for row in result.rows) == pytest.approx(result.total_cpu_ms, rel=1e-9)
    (trace,) = tmp_path.glob("trace*.json")      # left where the session's prefix put it
    events = pd.read_json(trace)
    kernels = events[(events["cat"] == "Node") & events["name"].str.endswith("_kernel_time")].sort_values("ts")
    spans = events[events["name"] == "model_run"].sort_values("ts").tail(runs)
    assert sum(rows[name].self_cpu_ms for name in nodes) == pytest.approx(
        kernels["dur"].tail(runs * len(nodes)).sum() / runs / 1000.0)   # every run runs each node once
    assert rows[SESSION].self_cpu_ms == pytest.approx(
        spans["dur"].sum() / runs / 1000.0 - sum(rows[name].self_cpu_ms for name in nodes), abs=1e-9)


def test_an_onnxruntime_variant_splits_by_onnx_operator_and_leaves_no_trace_file(tmp_path, zoo, capsys,
                                                                                  monkeypatch):
    onnxruntime_or_skip()
    import tempfile

    from onnxruntime.capi.onnxruntime_pybind11_state import get_all_operator_schema

    from measure.layers import SESSION

    profile = layers_profile(tmp_path, zoo, ("eager", "onnxruntime"))
    scratch, cwd = tmp_path / "scratch", tmp_path / "cwd"
    scratch.mkdir()
    cwd.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))   # where the temporary trace directory goes
    monkeypatch.chdir(cwd)                                   # where ONNX Runtime writes one by default
    out, eager = tmp_path / "ort.csv", tmp_path / "eager.csv"
    assert run_layers(str(profile), "--variant", "cnn-small/fp32/cpu/onnxruntime", "--batch", "4", "--runs", "2",
                      "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert list(scratch.iterdir()) == [] and list(cwd.iterdir()) == []
    table = pd.read_csv(out, comment="#")
    assert set(table["by"]) == {"operator"} and {OTHER, SESSION} <= set(table["name"])
    assert table["share_pct"].sum() == pytest.approx(100.0, abs=1e-4)
    ops = set(table["name"]) - {OTHER, SESSION}
    assert ops <= {schema.name for schema in get_all_operator_schema()}   # ONNX's and ONNX Runtime's op types
    assert "Conv" in ops and ops & {"Gemm", "MatMul", "FusedGemm", "FusedMatMul"}
    top = table[table["name"].isin(ops)].iloc[0]
    assert f"{top['name']} takes {top['share_pct']:.0f}% of the time at batch 4" in printed
    assert "(session)" in printed and "ONNX Runtime" in printed
    assert run_layers(str(profile), "--variant", "cnn-small/fp32/cpu", "--batch", "4", "--runs", "1",
                      "--out", str(eager)) == 0
    assert out.read_text().splitlines()[:2] == eager.read_text().splitlines()[:2]   # marker and header


def test_a_missing_onnxruntime_is_one_line_and_exit_status_2(tmp_path, zoo, monkeypatch, capsys):
    import sys

    from measure.cli import main

    monkeypatch.setitem(sys.modules, "onnxruntime", None)    # `import onnxruntime` raises ImportError
    profile = layers_profile(tmp_path, zoo, ("onnxruntime",))
    assert main(["layers", str(profile), "--variant", "cnn-small/fp32/cpu/onnxruntime", "--batch", "4"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error: cnn-small/fp32/cpu/onnxruntime: ")
    assert "onnxruntime" in err.split(":", 2)[2]
