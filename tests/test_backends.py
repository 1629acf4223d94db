"""Backends (measure/backends.py) on tiny models fitted here: TorchScript and ONNX Runtime against
eager PyTorch, variant ids with a backend, a backend that cannot be built, and the harness going on.

Tolerances: FP32 logits of either backend within 1e-4 of eager FP32's (relative to the batch's
largest logit, ``relative_error``); INT8 labels equal to eager FP32's on at least 95% of held-out
samples of a task the FP32 model fits (quadrants of an image, two token ranges).
"""

from __future__ import annotations

import copy
import importlib.util
import sys

import pytest
import torch
from torch import nn

from measure.backends import LOGIT_RTOL, check_supported, relative_error
from measure.models import SmallCNN, build_model
from measure.profile import BACKENDS, DEVICES, PRECISIONS, PRUNING, VariantSpec, profile_from_dict
from measure.variants import ModelRunner, VariantUnsupported, build_variant
from traces.errors import InputError


FP32_RTOL = 1e-4
INT8_LABEL_SHARE = 0.95
N_TRAIN, N_EVAL = 512, 200
VOCAB, SEQ = 300, 16
needs_onnxruntime = pytest.mark.skipif(
    not all(importlib.util.find_spec(p) for p in ("onnx", "onnxruntime", "onnxscript")),
    reason="onnx, onnxruntime and onnxscript are not installed (the lead adds them to the `measure` extra)")


def quadrant_images(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """1x16x16 noise with one bright quadrant; the label is the quadrant."""
    y = torch.randint(0, 4, (n,), generator=gen)
    x = torch.rand(n, 1, 16, 16, generator=gen) * 0.5
    for k in range(4):
        row, col = divmod(k, 2)
        x[y == k, :, 8 * row:8 * row + 8, 8 * col:8 * col + 8] += 0.5
    return x, y


def token_ranges(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded ids (0 = padding, 4..16 tokens) drawn from the low or the high half of the vocabulary."""
    y = torch.randint(0, 2, (n,), generator=gen)
    low = 1 + y * (VOCAB // 2)
    ids = low[:, None] + torch.randint(0, VOCAB // 2 - 1, (n, SEQ), generator=gen)
    lengths = torch.randint(4, SEQ + 1, (n,), generator=gen)
    return ids.masked_fill(torch.arange(SEQ)[None, :] >= lengths[:, None], 0), y


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float) -> nn.Module:
    gen = torch.Generator().manual_seed(1)
    optimiser = torch.optim.Adam(model.parameters(), lr)
    model.train()
    for _ in range(steps):
        rows = torch.randint(0, x.shape[0], (64,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[rows]), y[rows])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


@pytest.fixture(scope="module")
def fitted() -> dict:
    """name -> (fitted FP32 model, training inputs (calibration), held-out inputs, held-out labels)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    images, labels = quadrant_images(N_TRAIN + N_EVAL, gen)
    tokens, token_labels = token_ranges(N_TRAIN + N_EVAL, gen)
    models = {
        "cnn": (SmallCNN(1, 16, 4, (4, 8)), images, labels, 1e-2),
        "linear": (nn.Sequential(nn.Flatten(), nn.Linear(256, 16), nn.ReLU(), nn.Linear(16, 4)), images, labels, 1e-2),
        "bert": (build_model({"vocab_size": VOCAB, "max_len": SEQ}, "bert-2", 2, tiny=True), tokens, token_labels, 3e-3),
    }
    out = {}
    for name, (model, x, y, lr) in models.items():
        fit(model, x[:N_TRAIN], y[:N_TRAIN], 40, lr)
        out[name] = (model, x[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:])
    # Fitted, the tiny BERT's logits hardly depend on anything but the class (a wrong attention
    # mask moves them by < 1e-4); its random initialisation is sensitive to every token.
    out["bert-random"] = (build_model({"vocab_size": VOCAB, "max_len": SEQ}, "bert-2", 2, tiny=True).eval(),
                          *out["bert"][1:])
    torch.set_num_threads(before)
    return out


def build(fitted: dict, name: str, precision: str, backend: str) -> tuple[nn.Module, VariantSpec]:
    model, calibration, _, _ = fitted[name]
    spec = VariantSpec(f"tiny-{name}", precision, "none", "cpu", backend)
    return build_variant(spec, copy.deepcopy(model), calibration), spec


_BUILT: dict = {}


def built(fitted: dict, name: str, precision: str, backend: str) -> tuple[nn.Module, VariantSpec]:
    """``build`` once per module run (the variants are only read)."""
    key = (id(fitted), name, precision, backend)
    if key not in _BUILT:
        _BUILT[key] = build(fitted, name, precision, backend)
    return _BUILT[key]


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x).float()


def test_the_fitted_fp32_models_solve_their_tasks(fitted):
    for name, (model, _, x, y) in fitted.items():
        if name != "bert-random":
            assert (logits(model, x).argmax(1) == y).float().mean() >= 0.97, name


# ---- ids and profiles


@pytest.mark.parametrize("backend", BACKENDS)
def test_ids_round_trip_and_eager_keeps_three_parts(backend):
    for pruning in PRUNING:
        for precision in PRECISIONS:
            for device in DEVICES:
                spec = VariantSpec("resnet18", precision, pruning, device, backend)
                assert VariantSpec.parse(spec.id) == spec
                parts = spec.id.split("/")
                assert len(parts) == (3 if backend == "eager" else 4)
                assert backend == "eager" or parts[3] == backend
    assert VariantSpec("resnet18", "int8", "none", "cpu").id == "resnet18/int8/cpu"
    assert VariantSpec.parse("bert-2-channel/fp32/cpu/torchscript") == VariantSpec(
        "bert-2", "fp32", "channel", "cpu", "torchscript")


@pytest.mark.parametrize("bad", ["resnet18/fp32/cpu/tensorrt", "resnet18/fp32/cpu/eager", "resnet18/fp32/onnxruntime",
                                 "resnet18/fp32/cpu/onnxruntime/x", "resnet18/int4/cpu/onnxruntime"])
def test_a_bad_backend_in_an_id_is_an_input_error(bad):
    with pytest.raises(InputError) as err:
        VariantSpec.parse(bad)
    assert "\n" not in str(err.value) and bad in str(err.value)


def _profile(variants: list[dict]) -> dict:
    return {"name": "p", "data": {"task": "digits"}, "variants": variants}


def test_a_profile_selects_backends_per_entry():
    profile = profile_from_dict(_profile([
        {"model": "resnet18", "precisions": ["fp32", "int8"], "backends": ["eager", "onnxruntime", "torchscript"]},
        {"model": "bert-2"}]))
    ids = [spec.id for spec in profile.variants]
    want = [f"resnet18/{p}/cpu{t}" for p in ("fp32", "int8") for t in ("", "/onnxruntime", "/torchscript")]
    assert ids == want + ["bert-2/fp32/cpu"]


@pytest.mark.parametrize("backends", [["eager", "tvm"], [], 3])
def test_a_bad_backends_list_is_a_one_line_input_error(backends):
    with pytest.raises(InputError) as err:
        profile_from_dict(_profile([{"model": "resnet18", "backends": backends}]))
    assert err.value.where == "variants[0].backends" and "\n" not in str(err.value)


# ---- FP32: the backend's logits are eager's


@pytest.mark.parametrize("backend", ["torchscript", pytest.param("onnxruntime", marks=needs_onnxruntime)])
@pytest.mark.parametrize("name", ["cnn", "linear", "bert-random"])
def test_fp32_backends_match_eager_logits_and_predictions(fitted, name, backend):
    model, _, x, _ = fitted[name]
    variant, spec = built(fitted, name, "fp32", backend)
    batch = x[:37]  # neither the trace batch (8) nor the check batch (3): the batch axis is dynamic
    want = logits(model, batch)
    assert relative_error(logits(variant, batch), want) <= FP32_RTOL
    assert relative_error(logits(variant, x[5:6]), logits(model, x[5:6])) <= FP32_RTOL
    preds, confidences = ModelRunner(variant, x, spec).run(list(range(37)))
    probabilities = torch.softmax(want, 1)
    assert preds == want.argmax(1).tolist()
    torch.testing.assert_close(torch.tensor(confidences), probabilities.max(1).values, rtol=FP32_RTOL, atol=1e-6)


@needs_onnxruntime
def test_a_text_model_is_exported_with_the_tokenizers_inputs(fitted):
    variant, _ = built(fitted, "bert-random", "fp32", "onnxruntime")
    inputs = variant.session.get_inputs()
    assert [i.name for i in inputs] == ["input_ids", "attention_mask"]
    assert all(isinstance(i.shape[0], str) and i.shape[1] == SEQ for i in inputs)  # batch dynamic, length fixed


# ---- INT8: each backend's own quantization, same labels as FP32 on most samples


@pytest.mark.parametrize("backend", ["torchscript", pytest.param("onnxruntime", marks=needs_onnxruntime)])
@pytest.mark.parametrize("name", ["cnn", "linear", "bert"])
def test_int8_backends_are_quantized_and_agree_with_fp32_labels(fitted, name, backend):
    model, _, x, _ = fitted[name]
    variant, spec = built(fitted, name, "int8", backend)
    want = logits(model, x)
    got = logits(variant, x)
    assert relative_error(got, want) > 1e-6  # rounded: not the FP32 model under an INT8 name
    if backend == "onnxruntime":
        assert ("QuantizeLinear" if name == "cnn" else "DynamicQuantizeLinear") in variant.op_types
    else:
        kinds = {node.kind() for node in variant.graph.nodes()}
        assert any(kind.startswith("quantized::") for kind in kinds)
    preds, _ = ModelRunner(variant, x, spec).run(list(range(x.shape[0])))
    agree = (torch.tensor(preds) == want.argmax(1)).float().mean()
    assert agree >= INT8_LABEL_SHARE


# ---- what cannot be built says why


def test_bf16_runs_under_torchscript_and_is_refused_by_onnxruntime(fitted):
    model, _, x, _ = fitted["cnn"]
    eager = build_variant(VariantSpec("tiny-cnn", "bf16", "none", "cpu"), copy.deepcopy(model), fitted["cnn"][1])
    variant, _ = build(fitted, "cnn", "bf16", "torchscript")
    batch = x[:20].to(torch.bfloat16)
    assert relative_error(logits(variant, batch), logits(eager, batch)) <= LOGIT_RTOL["bf16"]
    with pytest.raises(VariantUnsupported, match="bf16 with onnxruntime"):
        build(fitted, "cnn", "bf16", "onnxruntime")
    with pytest.raises(VariantUnsupported, match="CPUExecutionProvider"):
        check_supported(VariantSpec("tiny-cnn", "fp32", "none", "cuda", "onnxruntime"))


@needs_onnxruntime
@pytest.mark.parametrize("threads", [1, 2])
def test_an_onnxruntime_session_takes_torchs_threads(fitted, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        variant, _ = build(fitted, "linear", "fp32", "onnxruntime")
    finally:
        torch.set_num_threads(before)
    options = variant.session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (threads, 1)


def test_a_missing_onnxruntime_is_unsupported_with_its_reason(fitted, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(VariantUnsupported, match="needs the onnx and onnxruntime packages"):
        build(fitted, "cnn", "fp32", "onnxruntime")


def test_the_harness_records_a_backend_that_cannot_be_built_and_goes_on(zoo, tmp_path, monkeypatch):
    from measure.harness import measure

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    profile = profile_from_dict({
        "name": "tiny", "zoo_dir": str(zoo), "data": {"task": "digits"},
        "latency": {"batch_sizes": [1, 4], "warmup_runs": 1, "timed_runs": 3, "replica": "inline"},
        "variants": [{"model": "cnn-small", "backends": ["eager", "onnxruntime", "torchscript"]}]})
    store = measure(profile, tmp_path / "bundle", latency=True, accuracy=True)
    failed = store.read("failed")
    assert [f["variant"] for f in failed] == ["cnn-small/fp32/cpu/onnxruntime"]
    assert "onnxruntime" in failed[0]["reason"] and "VariantUnsupported" in failed[0]["reason"]
    service = {v for frame in store.read("service") for v in frame["variant"]}
    assert service == {"cnn-small/fp32/cpu", "cnn-small/fp32/cpu/torchscript"}
    predictions = {frame["variant"].iloc[0]: frame for frame in store.read("predictions")}
    assert set(predictions) == service
    eager, traced = predictions["cnn-small/fp32/cpu"], predictions["cnn-small/fp32/cpu/torchscript"]
    assert traced["pred"].tolist() == eager["pred"].tolist()
    torch.testing.assert_close(torch.tensor(traced["confidence"].to_numpy()), torch.tensor(eager["confidence"].to_numpy()),
                               rtol=FP32_RTOL, atol=1e-6)
