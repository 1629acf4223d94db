"""Pruning a trained model two ways, so that users see which one actually speeds it up.

- ``l1``: unstructured magnitude pruning, half of every conv/linear weight set to zero. Dense
  kernels still multiply the zeros, so it costs accuracy and saves no time on CPU or GPU.
- ``channel``: structured pruning that removes whole channels, heads and neurons, shrinking the
  tensors themselves: ResNet basic blocks lose half of their inner channels, MobileNetV2 inverted
  residuals half of their expanded channels, plain conv stacks half of the channels between two
  convolutions, BERT layers half of their attention heads and of their feed-forward neurons. The
  kept channels are those with the largest L1 norm.

Either way the pruned model is then fine-tuned briefly on the training split, as practitioners do,
before it is measured (``measure.variants.finetuned_pruned_state``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

L1_AMOUNT = 0.5
CHANNEL_KEEP = 0.5


class PruningUnsupported(Exception):
    """This model has no structured pruning rule."""


def prune_l1(model: nn.Module, amount: float = L1_AMOUNT, *, keep_masks: bool = False) -> nn.Module:
    """Zero the smallest weights; with ``keep_masks`` the zeros stay enforced (for fine-tuning)
    until ``remove_masks``."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            prune.l1_unstructured(module, "weight", amount=amount)
            if not keep_masks:
                prune.remove(module, "weight")
    return model


def remove_masks(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if prune.is_pruned(module) and hasattr(module, "weight_mask"):
            prune.remove(module, "weight")
    return model


def _keep(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    k = max(1, int(round(scores.numel() * fraction)))
    return torch.sort(torch.topk(scores, k).indices).values


def _slice_conv(conv: nn.Conv2d, out_keep=None, in_keep=None) -> None:
    weight = conv.weight.data
    if out_keep is not None:
        weight = weight[out_keep]
        if conv.bias is not None:
            conv.bias = nn.Parameter(conv.bias.data[out_keep].clone())
        conv.out_channels = len(out_keep)
    if in_keep is not None:
        weight = weight[:, in_keep]
        conv.in_channels = len(in_keep)
    conv.weight = nn.Parameter(weight.clone())


def _slice_depthwise(conv: nn.Conv2d, keep) -> None:
    conv.weight = nn.Parameter(conv.weight.data[keep].clone())
    if conv.bias is not None:
        conv.bias = nn.Parameter(conv.bias.data[keep].clone())
    conv.in_channels = conv.out_channels = conv.groups = len(keep)


def _slice_bn(bn: nn.BatchNorm2d, keep) -> None:
    bn.weight = nn.Parameter(bn.weight.data[keep].clone())
    bn.bias = nn.Parameter(bn.bias.data[keep].clone())
    bn.running_mean = bn.running_mean[keep].clone()
    bn.running_var = bn.running_var[keep].clone()
    bn.num_features = len(keep)


def _slice_linear(linear: nn.Linear, out_keep=None, in_keep=None) -> None:
    weight = linear.weight.data
    if out_keep is not None:
        weight = weight[out_keep]
        linear.bias = nn.Parameter(linear.bias.data[out_keep].clone())
        linear.out_features = len(out_keep)
    if in_keep is not None:
        weight = weight[:, in_keep]
        linear.in_features = len(in_keep)
    linear.weight = nn.Parameter(weight.clone())


def _prune_basic_block(block, fraction: float) -> None:
    keep = _keep(block.conv1.weight.data.abs().sum(dim=(1, 2, 3)), fraction)
    _slice_conv(block.conv1, out_keep=keep)
    _slice_bn(block.bn1, keep)
    _slice_conv(block.conv2, in_keep=keep)


def _prune_inverted_residual(block, fraction: float) -> bool:
    layers = list(block.conv)
    if len(layers) != 4:  # expand ratio 1: no expansion to prune
        return False
    expand, depthwise, project, _ = layers
    keep = _keep(expand[0].weight.data.abs().sum(dim=(1, 2, 3)), fraction)
    _slice_conv(expand[0], out_keep=keep)
    _slice_bn(expand[1], keep)
    _slice_depthwise(depthwise[0], keep)
    _slice_bn(depthwise[1], keep)
    _slice_conv(project, in_keep=keep)
    return True


def _prune_bert(hf_model, fraction: float) -> None:
    """Drop the attention heads whose output projection has the smallest L1 norm, and the
    feed-forward neurons with the smallest input weights, layer by layer."""
    for layer in hf_model.bert.encoder.layer:
        attention = layer.attention.self
        heads, size = attention.num_attention_heads, attention.attention_head_size
        out = layer.attention.output.dense
        scores = out.weight.data.abs().sum(dim=0).view(heads, size).sum(dim=1)
        kept = _keep(scores, fraction)
        rows = torch.cat([torch.arange(h * size, (h + 1) * size) for h in kept.tolist()])
        for linear in (attention.query, attention.key, attention.value):
            _slice_linear(linear, out_keep=rows)
        _slice_linear(out, in_keep=rows)
        attention.num_attention_heads = len(kept)
        attention.all_head_size = len(kept) * size
        keep = _keep(layer.intermediate.dense.weight.data.abs().sum(dim=1), fraction)
        _slice_linear(layer.intermediate.dense, out_keep=keep)
        _slice_linear(layer.output.dense, in_keep=keep)


def _prune_sequential(seq: nn.Sequential, fraction: float) -> int:
    """Conv -> BN -> (activation, pooling) -> Conv chains inside a plain Sequential."""
    layers, pruned = list(seq), 0
    for i, layer in enumerate(layers):
        if not isinstance(layer, nn.Conv2d) or layer.groups != 1:
            continue
        j = i + 1
        bn = layers[j] if j < len(layers) and isinstance(layers[j], nn.BatchNorm2d) else None
        while j < len(layers) and isinstance(layers[j], (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.MaxPool2d)):
            j += 1
        if j < len(layers) and isinstance(layers[j], nn.Conv2d) and layers[j].groups == 1:
            keep = _keep(layer.weight.data.abs().sum(dim=(1, 2, 3)), fraction)
            _slice_conv(layer, out_keep=keep)
            if bn is not None:
                _slice_bn(bn, keep)
            _slice_conv(layers[j], in_keep=keep)
            pruned += 1
    return pruned


def prune_channels(model: nn.Module, fraction: float = CHANNEL_KEEP) -> nn.Module:
    """Remove channels in place; raises PruningUnsupported for an architecture without a rule."""
    from torchvision.models.mobilenetv2 import InvertedResidual
    from torchvision.models.resnet import BasicBlock

    pruned = 0
    hf_model = getattr(model, "bert_model", None)
    if hf_model is not None:
        _prune_bert(hf_model, fraction)
        pruned += 1
    for module in model.modules():
        if isinstance(module, BasicBlock):
            _prune_basic_block(module, fraction)
            pruned += 1
        elif isinstance(module, InvertedResidual):
            pruned += _prune_inverted_residual(module, fraction)
    if not pruned and isinstance(model, nn.Sequential):
        pruned += _prune_sequential(model, fraction)
    if not pruned:
        raise PruningUnsupported(f"no structured pruning rule for {type(model).__name__}")
    return model
