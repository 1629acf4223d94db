"""Real, offline evaluation data for the model zoo: digits, SST-2 and (optionally) CIFAR-10.

Every loader is seeded and deterministic, so the zoo, the latency/accuracy harness and the real
server all see the very same evaluation samples under the same stable ids. Nothing is downloaded:
digits ships with scikit-learn, SST-2 and CIFAR-10 are read from local copies.
"""

from __future__ import annotations

import csv
import hashlib
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from traces.errors import InputError

TASKS = ("digits", "sst2", "cifar10")
DEFAULT_SST2_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2_glue"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")  # [PAD] must be id 0: the models mask id 0
DIGITS_SIZE = 16


@dataclass
class DataConfig:
    """Which samples a task uses. ``max_train``/``max_eval`` cap the splits (None = all)."""

    seed: int = 0
    max_train: int | None = 20000
    max_eval: int | None = None
    sst2_dir: Path = DEFAULT_SST2_DIR
    cifar10_dir: Path | None = None
    vocab_size: int = 4000          # sst2 tokenizer vocabulary (upper bound)
    max_len: int = 64               # sst2 ids per sample, [CLS] and [SEP] included

    def __post_init__(self) -> None:
        # Profiles pass paths as strings; keep Path objects so the rest of the code need not care.
        self.sst2_dir = Path(self.sst2_dir)
        self.cifar10_dir = None if self.cifar10_dir is None else Path(self.cifar10_dir)

    @classmethod
    def tiny(cls, **overrides) -> "DataConfig":
        """A few hundred training samples and 64 evaluation samples, for fast tests."""
        return cls(**{"max_train": 300, "max_eval": 64, "vocab_size": 1000, "max_len": 32, **overrides})

    def to_json(self) -> dict:
        out = asdict(self)
        out["sst2_dir"] = str(self.sst2_dir)
        out["cifar10_dir"] = None if self.cifar10_dir is None else str(self.cifar10_dir)
        return out

    @classmethod
    def from_json(cls, raw: dict) -> "DataConfig":
        return cls(**raw)


@dataclass
class TaskData:
    """One task's tensors: train split for training, eval split (with stable ids) for measuring."""

    task: str
    input_kind: str                 # "image" | "tokens"
    num_classes: int
    x_train: torch.Tensor           # float32 [N,C,H,W] images, or int64 [N,L] token ids (pad 0)
    y_train: torch.Tensor           # int64 [N]
    x_eval: torch.Tensor
    y_eval: torch.Tensor
    eval_ids: list[str]
    meta: dict = field(default_factory=dict)

    def calibration(self, n: int = 256) -> torch.Tensor:
        """The first n training inputs (a seeded random sample), to calibrate static quantization."""
        return self.x_train[:n]

    def fingerprint(self) -> str:
        """A hash of every tensor and id: proves later loads reproduce the data a zoo was built on.

        Floats are rounded to 1e-4 first, so last-bit differences between CPUs do not count.
        """
        digest = hashlib.sha256()
        for tensor in (self.x_train, self.y_train, self.x_eval, self.y_eval):
            digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
            if tensor.is_floating_point():
                tensor = torch.round(tensor.double() * 1e4).to(torch.int64)
            digest.update(tensor.contiguous().numpy().tobytes())
        digest.update("\n".join(self.eval_ids).encode())
        return digest.hexdigest()


def load_task(task: str, cfg: DataConfig, work_dir: Path) -> TaskData:
    """Load a task's splits; ``work_dir`` holds derived files (the sst2 tokenizer)."""
    if task == "digits":
        return _digits(cfg)
    if task == "sst2":
        return _sst2(cfg, Path(work_dir))
    if task == "cifar10":
        return _cifar10(cfg)
    raise InputError("task", f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def _cap(n: int, limit: int | None) -> int:
    return n if limit is None else min(n, int(limit))


def _digits(cfg: DataConfig) -> TaskData:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # pixels are 0..16
    images = torch.nn.functional.interpolate(images, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear",
                                             align_corners=False).clamp_(0.0, 1.0)
    labels = torch.tensor(digits.target, dtype=torch.int64)
    train_idx, eval_idx = train_test_split(np.arange(len(labels)), test_size=0.3,
                                           stratify=digits.target, random_state=cfg.seed)
    train_idx = train_idx[:_cap(len(train_idx), cfg.max_train)]          # already shuffled
    eval_idx = np.sort(eval_idx)[:_cap(len(eval_idx), cfg.max_eval)]     # ids in dataset order
    tr, ev = torch.from_numpy(train_idx), torch.from_numpy(eval_idx)
    return TaskData(
        task="digits", input_kind="image", num_classes=10,
        x_train=images[tr].contiguous(), y_train=labels[tr], x_eval=images[ev].contiguous(), y_eval=labels[ev],
        eval_ids=[f"digits-{i:04d}" for i in eval_idx.tolist()],   # index in sklearn's load_digits()
        meta={"image_size": DIGITS_SIZE, "channels": 1, "source": "sklearn.datasets.load_digits"})


def _read_sst2(path: Path):
    import pandas as pd

    if not path.is_file():
        raise InputError(str(path), "SST-2 file not found (GLUE-style train.tsv/dev.tsv with header label, text_a)")
    frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False)
    if list(frame.columns[:2]) != ["label", "text_a"]:
        raise InputError(str(path), f"expected columns label, text_a; found {list(frame.columns)}")
    labels = pd.to_numeric(frame["label"], errors="coerce")
    bad = np.flatnonzero(~labels.isin([0, 1]).to_numpy())
    if bad.size:
        raise InputError(f"{path}: row {bad[0] + 1}", f"label must be 0 or 1, got {frame['label'].iloc[bad[0]]!r}")
    return frame["text_a"].astype(str).tolist(), labels.to_numpy(dtype=np.int64, copy=True)


def _tokenizer(texts: list[str], cfg: DataConfig, work_dir: Path):
    """A lowercase WordPiece tokenizer trained on the training subset only; cached as JSON."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    n = "all" if cfg.max_train is None else cfg.max_train
    path = work_dir / f"tokenizer-wordpiece-v{cfg.vocab_size}-seed{cfg.seed}-n{n}.json"
    if path.is_file():
        tokenizer = Tokenizer.from_file(str(path))
    else:
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=cfg.vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                            show_progress=False)
        tokenizer.train_from_iterator(texts, trainer)
        # The trainer numbers tokens in hash-map order, which changes from run to run: renumber them
        # (specials first, then sorted) so the same vocabulary always gives the same ids.
        rest = sorted(set(tokenizer.get_vocab()) - set(SPECIAL_TOKENS))
        vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *rest])}
        tokenizer.model = models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##")
        cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
        work_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tokenizer.save(str(tmp))
        tmp.replace(path)
    if tokenizer.token_to_id("[PAD]") != 0:
        raise InputError(str(path), "tokenizer must map [PAD] to id 0")
    tokenizer.enable_truncation(cfg.max_len)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", length=cfg.max_len)
    return tokenizer, path


def _encode(tokenizer, texts: list[str]) -> torch.Tensor:
    return torch.tensor([e.ids for e in tokenizer.encode_batch(texts)], dtype=torch.int64)


def _sst2(cfg: DataConfig, work_dir: Path) -> TaskData:
    root = Path(cfg.sst2_dir)
    if not root.is_dir():
        raise InputError(str(root), "SST-2 directory not found (set DataConfig.sst2_dir to a GLUE-style copy)")
    train_texts, train_labels = _read_sst2(root / "train.tsv")
    dev_texts, dev_labels = _read_sst2(root / "dev.tsv")
    order = np.random.default_rng(cfg.seed).permutation(len(train_texts))
    order = order[:_cap(len(order), cfg.max_train)]
    train_texts = [train_texts[i] for i in order]
    n_eval = _cap(len(dev_texts), cfg.max_eval)
    tokenizer, path = _tokenizer(train_texts, cfg, work_dir)
    return TaskData(
        task="sst2", input_kind="tokens", num_classes=2,
        x_train=_encode(tokenizer, train_texts), y_train=torch.from_numpy(train_labels[order]),
        x_eval=_encode(tokenizer, dev_texts[:n_eval]), y_eval=torch.from_numpy(dev_labels[:n_eval]),
        eval_ids=[f"sst2-dev-{i:04d}" for i in range(n_eval)],     # 0-based data row of dev.tsv
        meta={"vocab_size": tokenizer.get_vocab_size(), "max_len": cfg.max_len, "pad_id": 0,
              "tokenizer": str(path), "source": str(root)})


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open("rb") as handle:
        batch = pickle.load(handle, encoding="bytes")  # the official python format; a local, trusted copy
    data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return data, np.asarray(batch[b"labels"], dtype=np.int64)


def _cifar10(cfg: DataConfig) -> TaskData:
    root = cfg.cifar10_dir
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    if root is None or not all((Path(root) / n).is_file() for n in names):
        raise InputError(str(root) if root is not None else "cifar10_dir",
                         "CIFAR-10 python batches not found (need data_batch_1..5 and test_batch)")
    parts = [_cifar_batch(Path(root) / n) for n in names[:5]]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    x_test, y_test = _cifar_batch(Path(root) / "test_batch")
    order = np.random.default_rng(cfg.seed).permutation(len(y))[:_cap(len(y), cfg.max_train)]
    n_eval = _cap(len(y_test), cfg.max_eval)
    as_float = lambda a: torch.from_numpy(a.astype(np.float32) / 255.0)  # noqa: E731
    return TaskData(
        task="cifar10", input_kind="image", num_classes=10,
        x_train=as_float(x[order]), y_train=torch.from_numpy(y[order]),
        x_eval=as_float(x_test[:n_eval]), y_eval=torch.from_numpy(y_test[:n_eval]),
        eval_ids=[f"cifar10-test-{i:05d}" for i in range(n_eval)],
        meta={"image_size": 32, "channels": 3, "source": str(root)})
