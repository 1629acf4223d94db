"""Pruning, precision and the runner on tiny models built from configs (no training, no download)."""

from __future__ import annotations

import copy

import pytest
import torch

from measure.models import build_model
from measure.profile import VariantSpec
from measure.pruning import prune_channels, prune_l1
from measure.variants import ModelRunner, VariantUnsupported, build_variant

IMAGE = {"channels": 1, "image_size": 16}
TEXT = {"vocab_size": 300, "max_len": 16}


def tiny(name):
    torch.manual_seed(0)
    meta = TEXT if name.startswith("bert") else IMAGE
    model = build_model(meta, name, 2 if meta is TEXT else 10, tiny=True).eval()
    x = torch.randint(1, 300, (6, 16)) if meta is TEXT else torch.rand(6, 1, 16, 16)
    return model, x


def params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "bert-6"])
def test_channel_pruning_keeping_everything_changes_nothing(name):
    model, x = tiny(name)
    with torch.inference_mode():
        before = model(x)
        after = prune_channels(copy.deepcopy(model), fraction=1.0)(x)
    assert torch.allclose(before, after, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "bert-6"])
def test_channel_pruning_shrinks_the_model(name):
    model, x = tiny(name)
    pruned = prune_channels(copy.deepcopy(model))
    assert params(pruned) < params(model)
    with torch.inference_mode():
        assert pruned(x).shape == model(x).shape


def test_l1_pruning_zeros_half_the_weights_and_keeps_shapes():
    model, _ = tiny("resnet18")
    pruned = prune_l1(copy.deepcopy(model))
    convs = [m.weight for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    zeros = sum((w == 0).sum().item() for w in convs) / sum(w.numel() for w in convs)
    assert zeros == pytest.approx(0.5, abs=0.01)
    assert params(pruned) == params(model)


@pytest.mark.parametrize("name, precision", [("resnet18", "int8"), ("mobilenet_v2", "int8"), ("bert-6", "int8"),
                                             ("resnet18", "bf16"), ("bert-2", "bf16"), ("cnn-small", "fp32")])
def test_precisions_run_through_the_runner(name, precision):
    model, x = tiny(name)
    spec = VariantSpec(name, precision, "none", "cpu")
    variant = build_variant(spec, copy.deepcopy(model), x)
    if precision == "int8":
        assert any("quantized" in type(m).__module__ for m in variant.modules())
    runner = ModelRunner(variant, x, spec)
    preds, confs = runner.run([0, 3, 3, 5])
    assert len(preds) == len(confs) == 4 and all(0 <= c <= 1 for c in confs)
    # the same model in fp32 agrees on most predictions (random weights: a loose check)
    with torch.inference_mode():
        reference = model(x[[0, 3, 3, 5]]).argmax(1).tolist()
    assert sum(p == r for p, r in zip(preds, reference)) >= 2


def test_unsupported_variants_say_why():
    model, x = tiny("cnn-small")
    with pytest.raises(VariantUnsupported, match="CUDA"):
        build_variant(VariantSpec("cnn-small", "fp16", "none", "cpu"), model, x)
    if not torch.cuda.is_available():
        with pytest.raises(VariantUnsupported, match="no CUDA device"):
            build_variant(VariantSpec("cnn-small", "fp32", "none", "cuda"), model, x)
