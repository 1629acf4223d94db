"""Building a variant (model x pruning x precision x device x backend) and running real batches of it.

Precisions: ``fp32``; ``bf16`` (weights and activations in bfloat16); ``fp16`` (CUDA only);
``int8``: static post-training quantization with calibration (FX graph mode) for convolutional
models, since dynamic quantization leaves convolutions in FP32, and dynamic quantization of the
Linear layers for transformers. The backend (``eager`` PyTorch, ``torchscript``, ``onnxruntime``)
is applied last, by ``measure/backends.py``; its model is called like any other. ``ModelRunner.run``
is the one code path that both the latency harness times and the real server calls, so measured
service times are what the server pays.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from .profile import VariantSpec
from .pruning import PruningUnsupported, prune_channels, prune_l1, remove_masks


class VariantUnsupported(Exception):
    """This variant cannot be built here; the message says why (recorded, and the run goes on)."""


def has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def quantize_int8(model: nn.Module, calibration: torch.Tensor) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import get_default_qconfig_mapping, quantize_dynamic
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        engines = torch.backends.quantized.supported_engines
        torch.backends.quantized.engine = "x86" if "x86" in engines else "fbgemm"
        if not has_conv(model):
            return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
        prepared = prepare_fx(model, get_default_qconfig_mapping(torch.backends.quantized.engine),
                              (calibration[:2],))
        with torch.inference_mode():
            for start in range(0, calibration.shape[0], 64):
                prepared(calibration[start:start + 64])
        return convert_fx(prepared)


PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def model_inputs(inputs: torch.Tensor, spec: VariantSpec) -> torch.Tensor:
    """Inputs as the variant's model takes them: floating ones in its precision, on its device."""
    dtype = PRECISION_DTYPES.get(spec.precision)
    if dtype is not None and inputs.is_floating_point():
        inputs = inputs.to(dtype)
    return inputs.to(spec.device)


def build_variant(spec: VariantSpec, fp32_model: nn.Module, calibration: torch.Tensor,
                  pruned_state: dict | None = None, *, threads: int | None = None) -> nn.Module:
    """Apply pruning, then precision, then the backend to a trained FP32 model (which is modified).

    ``pruned_state`` replaces the pruned model's weights (a fine-tuned checkpoint of the same shape).
    ``calibration``: real samples, to calibrate int8 and to trace or export a backend's model.
    ``threads``: an ONNX Runtime session's intra-op threads (default: PyTorch's, as the harness set them).
    """
    if spec.device == "cuda" and not torch.cuda.is_available():
        raise VariantUnsupported("device cuda requested but no CUDA device is available")
    if spec.precision == "fp16" and spec.device != "cuda":
        raise VariantUnsupported("fp16 is measured on a CUDA device only")
    if spec.precision == "int8" and spec.device != "cpu":
        raise VariantUnsupported("int8 quantized kernels (x86/fbgemm) run on the CPU only")
    from . import backends  # it imports this module

    backends.check_supported(spec)
    model = prune(spec.pruning, fp32_model.eval())
    if pruned_state is not None:
        model.load_state_dict(pruned_state)
    if spec.backend == "onnxruntime":  # exported in FP32; ONNX Runtime quantizes it itself
        return backends.onnxruntime_model(model, spec.precision, calibration, threads or torch.get_num_threads())
    if spec.precision == "int8":
        model = quantize_int8(model, calibration)
    elif spec.precision in ("bf16", "fp16"):
        model = model.to(PRECISION_DTYPES[spec.precision])
    model = model.to(spec.device).eval()
    if spec.backend == "torchscript":
        return backends.torchscript_model(model, model_inputs(calibration, spec), spec.precision)
    return model


def prune(method: str, model: nn.Module) -> nn.Module:
    if method == "l1":
        return prune_l1(model)
    if method == "channel":
        try:
            return prune_channels(model)
        except PruningUnsupported as exc:
            raise VariantUnsupported(str(exc)) from None
    return model


FINETUNE = {"epochs": {"image": 3, "tokens": 1}, "lr": {"image": 1e-3, "tokens": 3e-4}}


def finetuned_pruned_state(zoo_dir: Path, task: str, model_name: str, method: str, data) -> dict:
    """Pruned weights after a short fine-tune (``FINETUNE``) on the training split, cached in the zoo
    as ``<model>-<method>-ft.pt`` next to the checkpoint it was derived from."""
    from .train import TrainConfig, train_model
    from .zoo import load_model

    task_dir = Path(zoo_dir) / task
    base = task_dir / f"{model_name}.pt"
    cache = task_dir / f"{model_name}-{method}-ft.pt"
    if cache.is_file() and cache.stat().st_mtime >= base.stat().st_mtime:
        return torch.load(cache, weights_only=True)
    model = load_model(zoo_dir, task, model_name)
    if method == "l1":
        model = prune_l1(model, keep_masks=True)
    else:
        model = prune(method, model)
    train_model(model, data, TrainConfig(**FINETUNE), name=model_name)
    if method == "l1":
        remove_masks(model)
    state = model.eval().state_dict()
    tmp = cache.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(cache)
    return state


class ModelRunner:
    """Runs the model on the evaluation inputs selected by sample index, as one batch."""

    def __init__(self, model: nn.Module, inputs: torch.Tensor, spec: VariantSpec):
        self.model = model
        self.spec = spec
        self.inputs = model_inputs(inputs, spec)
        self._cuda = spec.device == "cuda"

    def run(self, sample_indices: list[int]) -> tuple[list, list[float]]:
        index = torch.as_tensor(sample_indices, dtype=torch.long, device=self.inputs.device)
        with torch.inference_mode():
            logits = self.model(self.inputs.index_select(0, index))
            confidence, pred = torch.softmax(logits.float(), dim=1).max(dim=1)
            if self._cuda:
                torch.cuda.synchronize()
            return pred.tolist(), confidence.tolist()


def load_variant(zoo_dir: Path, task: str, spec: VariantSpec, data) -> nn.Module:
    """A variant of a trained zoo model; pruned ones are fine-tuned once (then cached)."""
    from .zoo import load_model

    state = None
    if spec.pruning != "none":
        state = finetuned_pruned_state(zoo_dir, task, spec.model, spec.pruning, data)
    return build_variant(spec, load_model(zoo_dir, task, spec.model), data.calibration(256), state)
