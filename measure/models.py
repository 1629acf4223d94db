"""The zoo's architectures, built from configs only (no pretrained weights, nothing downloaded).

Each model maps a TaskData input batch to logits [B, num_classes]. Vision models are made of plain
``nn.Conv2d``/``nn.BatchNorm2d``/``nn.ReLU`` modules (torchvision blocks included) so FX static int8
quantization and channel pruning can rewrite them; text models wrap a Hugging Face BERT so dynamic
int8 quantization and head pruning (``.bert_model.prune_heads``) apply.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from traces.errors import InputError

MODEL_NAMES: dict[str, list[str]] = {
    "image": ["cnn-small", "cnn-small-kd", "mobilenet_v2", "resnet18"],
    "tokens": ["bert-2", "bert-2-kd", "bert-4", "bert-6"],
}
TEACHERS: dict[str, str] = {"cnn-small-kd": "resnet18", "bert-2-kd": "bert-6"}  # student -> teacher
# (layers, hidden, heads, intermediate). Trained from scratch on 20k SST-2 phrases, accuracy
# saturates near 2 layers x 128 hidden, so bert-2 is narrow (a real accuracy gap, ~100x fewer
# multiply-adds per token than bert-6) and bert-6 stops at 192 hidden to train in minutes on 2 cores.
BERT_SIZES = {"bert-2": (2, 32, 2, 128), "bert-4": (4, 128, 4, 512), "bert-6": (6, 192, 4, 768)}
CNN_WIDTHS = (1, 2)  # cnn-small's conv channels: ~95% on digits where ResNet-18 reaches ~99%
TINY_BERT_SIZES = {"bert-2": (1, 32, 2, 64), "bert-4": (2, 32, 2, 64), "bert-6": (2, 48, 2, 96)}


def architecture(name: str) -> str:
    """The architecture behind a model name: a distilled student shares its sibling's."""
    return name[:-3] if name.endswith("-kd") else name


def family(name: str) -> str:
    """Training-hyperparameter family of a model name: cnn, mobilenet, resnet or bert."""
    arch = architecture(name)
    return {"cnn-small": "cnn", "mobilenet_v2": "mobilenet", "resnet18": "resnet"}.get(arch, arch.split("-")[0])


def input_kind(name: str) -> str:
    """``image`` or ``tokens``; InputError for an unknown model name."""
    for kind, names in MODEL_NAMES.items():
        if name in names:
            return kind
    known = ", ".join(n for names in MODEL_NAMES.values() for n in names)
    raise InputError("model", f"unknown model {name!r}; expected one of {known}")


class SmallCNN(nn.Sequential):
    """Two conv-BN-ReLU-pool stages and a linear head: deliberately small, fast, less accurate."""

    def __init__(self, channels: int, image_size: int, num_classes: int, widths: tuple[int, int] = CNN_WIDTHS):
        c1, c2 = widths
        super().__init__(
            nn.Conv2d(channels, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(c2 * (image_size // 4) ** 2, num_classes))


def _mobilenet_v2(channels: int, num_classes: int, tiny: bool) -> nn.Module:
    from torchvision.models import mobilenet_v2

    if tiny:
        setting = [[1, 16, 1, 1], [6, 24, 1, 2], [6, 32, 1, 2]]
        model = mobilenet_v2(num_classes=num_classes, width_mult=0.25, inverted_residual_setting=setting)
    else:
        model = mobilenet_v2(num_classes=num_classes)
    stem = model.features[0][0]
    # Small inputs (16x16, 32x32): keep full resolution in the stem, as CIFAR-style variants do.
    model.features[0][0] = nn.Conv2d(channels, stem.out_channels, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.features[0][0].weight, mode="fan_out")
    return model


def _resnet(channels: int, num_classes: int, width: int, blocks: list[int]) -> nn.Module:
    """torchvision's ResNet with BasicBlocks, a 3x3 stride-1 stem and no max-pool (small images).

    ``width`` 64 with blocks [2, 2, 2, 2] is exactly ResNet-18's body; tiny tests use fewer channels.
    """
    from torchvision.models.resnet import BasicBlock, ResNet

    model = ResNet(BasicBlock, blocks, num_classes=num_classes)
    model.conv1 = nn.Conv2d(channels, width, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    if width != 64:
        model.bn1 = nn.BatchNorm2d(width)
        model.inplanes = width
        model.layer1 = model._make_layer(BasicBlock, width, blocks[0])
        model.layer2 = model._make_layer(BasicBlock, 2 * width, blocks[1], stride=2)
        model.layer3 = model._make_layer(BasicBlock, 4 * width, blocks[2], stride=2)
        model.layer4 = model._make_layer(BasicBlock, 8 * width, blocks[3], stride=2)
        model.fc = nn.Linear(8 * width, num_classes)
    for module in model.modules():  # torchvision's initialisation, applied to the replaced modules too
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model


@functools.cache
def _prunable_bert_class() -> type:
    """``BertForSequenceClassification`` plus the ``prune_heads`` that transformers 5 removed."""
    from transformers import BertForSequenceClassification
    from transformers.pytorch_utils import prune_linear_layer

    class PrunableBertForSequenceClassification(BertForSequenceClassification):
        def prune_heads(self, heads_to_prune: dict[int, list[int]]) -> None:
            """Remove attention heads (original numbering, per layer) by slicing Q/K/V and the output."""
            for layer, heads in heads_to_prune.items():
                attention = self.bert.encoder.layer[layer].attention
                done = getattr(attention, "pruned_heads", set())
                heads = set(heads) - done
                if not heads:
                    continue
                sa = attention.self
                keep = torch.ones(sa.num_attention_heads, sa.attention_head_size)
                for head in heads:  # position of an original head among those still present
                    keep[head - sum(1 for d in done if d < head)] = 0
                index = keep.view(-1).eq(1).nonzero().squeeze(1)
                sa.query, sa.key, sa.value = (prune_linear_layer(l, index) for l in (sa.query, sa.key, sa.value))
                attention.output.dense = prune_linear_layer(attention.output.dense, index, dim=1)
                sa.num_attention_heads -= len(heads)
                sa.all_head_size = sa.attention_head_size * sa.num_attention_heads
                attention.pruned_heads = done | heads

    return PrunableBertForSequenceClassification


def attention_mask(input_ids: torch.Tensor) -> torch.Tensor:
    """The tokenizer's attention mask of padded ids: 1 on tokens, 0 on padding (id 0)."""
    return (input_ids != 0).long()


class BertClassifier(nn.Module):
    """``forward(input_ids) -> logits``; id 0 is padding and is masked out of attention.

    ``bert_model`` is the Hugging Face ``BertForSequenceClassification`` (with ``prune_heads``).
    """

    def __init__(self, vocab_size: int, max_len: int, num_classes: int, size: tuple[int, int, int, int]):
        super().__init__()
        from transformers import BertConfig

        layers, hidden, heads, intermediate = size
        config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=intermediate,
                            max_position_embeddings=max_len, type_vocab_size=1, num_labels=num_classes,
                            pad_token_id=0)
        self.bert_model = _prunable_bert_class()(config)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.bert_model(input_ids=input_ids, attention_mask=attention_mask(input_ids)).logits

    def prune_heads(self, heads_to_prune: dict[int, list[int]]) -> None:
        self.bert_model.prune_heads(heads_to_prune)


def _need(meta: dict, keys: tuple[str, ...], name: str) -> None:
    missing = [k for k in keys if k not in meta]
    if missing:
        raise InputError("model", f"{name} needs task meta {missing} (is it the right input kind for the task?)")


def build_model(task_data_meta: dict, name: str, num_classes: int, *, tiny: bool = False) -> nn.Module:
    """A freshly initialised model (seed torch first for reproducible weights).

    ``tiny`` shrinks every architecture for fast tests. The returned module carries ``zoo_name`` so
    training can pick the model family's hyperparameters.
    """
    kind = input_kind(name)
    arch = architecture(name)
    meta = task_data_meta
    if kind == "image":
        _need(meta, ("channels", "image_size"), name)
        channels, size = int(meta["channels"]), int(meta["image_size"])
        if arch == "cnn-small":
            model: nn.Module = SmallCNN(channels, size, num_classes, (2, 4) if tiny else CNN_WIDTHS)
        elif arch == "mobilenet_v2":
            model = _mobilenet_v2(channels, num_classes, tiny)
        else:
            model = _resnet(channels, num_classes, 8 if tiny else 64, [1, 1, 1, 1] if tiny else [2, 2, 2, 2])
    else:
        _need(meta, ("vocab_size", "max_len"), name)
        sizes = TINY_BERT_SIZES if tiny else BERT_SIZES
        model = BertClassifier(int(meta["vocab_size"]), int(meta["max_len"]), num_classes, sizes[arch])
    model.zoo_name = name
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
