"""Backends: the runtime a variant is deployed on, beside its model, pruning, precision and device.

The same trained network costs a different time per batch depending on what runs it. ``eager`` is
plain PyTorch: every operator dispatched from Python, one after the other. ``torchscript`` traces
the model once on a real batch (``torch.jit.trace``) and freezes it (``torch.jit.freeze``: weights
become constants, batch norms fold into the convolutions before them), so a run no longer goes
through the Python of the model's modules. ``onnxruntime`` exports the model to an ONNX graph
(``torch.onnx.export``, the batch axis left dynamic) and runs it with ONNX Runtime's
``CPUExecutionProvider``, with every graph optimisation on (``ORT_ENABLE_ALL``: fusions, layout
changes). Serving systems choose between such runtimes, so a variant names its backend and is
measured under it (ids: ``resnet18/int8/cpu/onnxruntime``; see ``measure/profile.py``).

What each backend runs is the deployed model itself: ``ModelRunner.run`` calls it like a PyTorch
module (a batch in, logits out) and takes the softmax confidence and the argmax of *its* logits,
so the accuracy and confidence recorded for a variant are those of the model the latency was
timed on.

**INT8 belongs to the backend.** TorchScript traces the eager INT8 model (FX static quantization
for CNNs, dynamic quantization of the Linear layers for transformers, ``measure/variants.py``).
ONNX Runtime quantizes the exported FP32 graph with its own tools, as one deploys on it:
``quantize_static`` for CNNs (QDQ format, signed 8-bit activations and per-channel weights,
min-max ranges calibrated on the same real training samples as PyTorch's), ``quantize_dynamic`` of
the MatMul and Gemm (Linear) weights for transformers. The two INT8 models differ in rounding and
in what is quantized, so they differ in accuracy as well as in speed.

**Text models** are exported with the tokenizer's two inputs, ``input_ids`` and
``attention_mask``, the mask made from the padded ids exactly as ``BertClassifier`` makes it.

**Threads** are one setting for every backend: PyTorch's intra-op threads, which the harness and
every replica set from the profile's ``threads`` before building (``torch.set_num_threads``), are
TorchScript's too, and an ONNX Runtime session gets as many intra-op threads (inter-op: 1,
sequential execution).

**Checked when built.** A trace records the path the example batch took and an export may fix a
shape, so each built model is run once more on other samples at another batch size and compared
with the PyTorch model it came from: logits within ``LOGIT_RTOL`` of the largest logit (relative
to the batch's largest magnitude), or, for ONNX Runtime's own INT8 (no PyTorch twin), the right
shape and finite values. A model that fails, a backend that is not installed, an export that
fails, and a combination the runtime lacks (bfloat16 or fp16 on ONNX Runtime's CPU provider, which
has no such Conv or MatMul kernels; ONNX Runtime on a CUDA device) raise ``VariantUnsupported``
with the reason, which the harness records while the run goes on.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .models import BertClassifier, attention_mask
from .profile import VariantSpec
from .variants import VariantUnsupported, has_conv

TRACE_BATCH = 8        # real calibration samples the trace or the export runs on
CHECK_BATCH = 3        # the last calibration samples, at another batch size, for the check when built
CALIBRATION_BATCH = 64
LOGIT_RTOL = {"fp32": 1e-4, "int8": 1e-3, "bf16": 2e-2, "fp16": 2e-2}  # built vs. its PyTorch source
INT8_DYNAMIC_OPS = ["MatMul", "Gemm"]  # the Linear layers, as PyTorch's dynamic quantization


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``max |actual - expected| / max |expected|``: how far two batches of logits are, on the scale
    of the expected ones (a plain relative error blows up on logits near zero)."""
    scale = expected.float().abs().max().clamp_min(1e-12)
    return float((actual.float() - expected.float()).abs().max() / scale)


def check_supported(spec: VariantSpec) -> None:
    """``VariantUnsupported`` for a combination the backend cannot run here (before any work)."""
    if spec.backend != "onnxruntime":
        return
    if spec.device != "cpu":
        raise VariantUnsupported("the onnxruntime backend runs on ONNX Runtime's CPUExecutionProvider only")
    if spec.precision in ("bf16", "fp16"):
        raise VariantUnsupported(f"{spec.precision} with onnxruntime: the CPUExecutionProvider has no "
                                 f"{spec.precision} Conv, MatMul or Add kernels")


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:240]


def _verify(backend: str, built: nn.Module, source: nn.Module, batch: torch.Tensor, rtol: float | None) -> None:
    """Compare ``built`` with the model it came from on ``batch`` (see the module docstring)."""
    with torch.inference_mode():
        want, got = source(batch), built(batch)
    if got.shape != want.shape or not torch.isfinite(got.float()).all():
        raise VariantUnsupported(f"{backend}: logits of shape {tuple(got.shape)} (finite: "
                                 f"{bool(torch.isfinite(got.float()).all())}) for a batch of {batch.shape[0]}, "
                                 f"expected {tuple(want.shape)}")
    if rtol is not None and (error := relative_error(got, want)) > rtol:
        raise VariantUnsupported(f"{backend}: logits differ from the PyTorch model's by {error:.1e} of the "
                                 f"largest on a batch of {batch.shape[0]} (limit {rtol:g}): the traced or "
                                 "exported graph does not hold for other inputs")


def torchscript_model(model: nn.Module, inputs: torch.Tensor, precision: str) -> torch.jit.ScriptModule:
    """``model`` (eval mode, precision applied) traced on ``inputs[:TRACE_BATCH]``, then frozen;
    checked on ``inputs[-CHECK_BATCH:]``. ``inputs`` are real samples as the runner feeds them."""
    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        try:
            with torch.no_grad():
                traced = torch.jit.freeze(torch.jit.trace(model, inputs[:TRACE_BATCH], check_trace=False))
        except Exception as exc:  # noqa: BLE001 - whatever the tracer refuses is recorded as the reason
            raise VariantUnsupported(f"torch.jit.trace/freeze failed: {_first_line(exc)}") from None
    _verify("torchscript", traced, model, inputs[-CHECK_BATCH:], LOGIT_RTOL[precision])
    return traced


@dataclass(frozen=True)
class OnnxInputs:
    """The ONNX graph's inputs, and how a batch as the runner feeds it becomes them."""

    names: tuple[str, ...]
    of_batch: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]

    def feeds(self, batch: torch.Tensor) -> dict:
        return {name: tensor.numpy() for name, tensor in zip(self.names, self.of_batch(batch))}


def onnx_signature(model: nn.Module) -> tuple[nn.Module, OnnxInputs]:
    """The module to export (its inputs -> logits) and its inputs: a text model takes the
    tokenizer's ``input_ids`` and ``attention_mask``, any other model its batch as ``input``."""
    if isinstance(model, BertClassifier):
        return (_TokenLogits(model.bert_model).eval(),
                OnnxInputs(("input_ids", "attention_mask"), lambda ids: (ids, attention_mask(ids))))
    return model, OnnxInputs(("input",), lambda batch: (batch,))


class _TokenLogits(nn.Module):
    """A Hugging Face sequence classifier as ``(input_ids, attention_mask) -> logits``."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf_model = hf_model

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.hf_model(input_ids=input_ids, attention_mask=mask).logits


class OnnxRuntimeModel(nn.Module):
    """An ONNX Runtime session called like the PyTorch model: a CPU batch in, logits out.

    ``op_types``: the operators of the graph handed to the session (before ONNX Runtime's own
    fusions), e.g. ``QuantizeLinear``/``MatMulInteger`` in an INT8 model."""

    def __init__(self, session, inputs: OnnxInputs, op_types: frozenset[str]):
        super().__init__()
        self.session = session
        self.inputs = inputs
        self.op_types = op_types
        self._outputs = [session.get_outputs()[0].name]

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(self._outputs, self.inputs.feeds(batch))[0])


def _import_onnxruntime():
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise VariantUnsupported(f"the onnxruntime backend needs the onnx and onnxruntime packages ({exc})") from None
    return onnx, onnxruntime


def export_onnx(module: nn.Module, inputs: OnnxInputs, batch: torch.Tensor):
    """The ONNX ``ModelProto`` of ``module``, traced on ``batch``, with the batch axis dynamic."""
    args = inputs.of_batch(batch)
    batch_axis = torch.export.Dim("batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.no_grad():
                program = torch.onnx.export(module, args, input_names=list(inputs.names),
                                            output_names=["logits"], dynamic_shapes=tuple({0: batch_axis} for _ in args),
                                            dynamo=True, verbose=False)
        except Exception as exc:  # noqa: BLE001 - recorded as the variant's reason
            raise VariantUnsupported(f"torch.onnx.export failed: {_first_line(exc)}") from None
    return program.model_proto


class _CalibrationReader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over real samples, in batches."""

    def __init__(self, inputs: OnnxInputs, samples: torch.Tensor):
        self._batches = iter([inputs.feeds(samples[start:start + CALIBRATION_BATCH])
                              for start in range(0, samples.shape[0], CALIBRATION_BATCH)])

    def get_next(self) -> dict | None:
        return next(self._batches, None)


def _quantize(model_proto, inputs: OnnxInputs, calibration: torch.Tensor, static: bool, out: Path) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out.with_name("prepared.onnx")  # shapes inferred, graph simplified: what the quantizer expects
    quant_pre_process(model_proto, prepared)
    if not static:
        quantize_dynamic(prepared, out, op_types_to_quantize=INT8_DYNAMIC_OPS, weight_type=QuantType.QInt8)
        return
    quantize_static(prepared, out, _CalibrationReader(inputs, calibration), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)


def session_options(onnxruntime, threads: int):
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no notes on stderr per session
    return options


def onnxruntime_model(model: nn.Module, precision: str, calibration: torch.Tensor, threads: int) -> OnnxRuntimeModel:
    """The FP32 ``model`` (eval mode, pruned) exported, quantized by ONNX Runtime if ``precision`` is
    int8, in a CPU session of ``threads`` intra-op threads; checked as the module docstring says."""
    onnx, onnxruntime = _import_onnxruntime()
    model = model.eval()
    module, inputs = onnx_signature(model)
    proto = export_onnx(module, inputs, calibration[:TRACE_BATCH])
    with tempfile.TemporaryDirectory(prefix="servesim-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        if precision == "int8":
            _quantize(proto, inputs, calibration, has_conv(model), path)
        else:
            path.write_bytes(proto.SerializeToString())
        op_types = frozenset(node.op_type for node in onnx.load(path).graph.node)
        session = onnxruntime.InferenceSession(str(path), session_options(onnxruntime, threads),
                                               providers=["CPUExecutionProvider"])
    built = OnnxRuntimeModel(session, inputs, op_types)
    _verify("onnxruntime", built, model, calibration[-CHECK_BATCH:], LOGIT_RTOL["fp32"] if precision == "fp32" else None)
    return built
