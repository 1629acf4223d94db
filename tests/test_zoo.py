"""The offline model zoo: data loaders, models, quantizability, seeded training, distillation, zoo I/O.

Everything runs on tiny models and tiny data so the file takes well under a minute on two cores.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import SHARED
from measure.data import DataConfig, load_task
from measure.models import MODEL_NAMES, TEACHERS, build_model
from measure.train import TrainConfig, accuracy, kd_loss, predict_logits, train_model
from measure.zoo import DEFAULT_MODELS, load_model, load_zoo_task, train_zoo
from traces.errors import InputError

SST2_DIR = SHARED / "data" / "sst2_glue"
TOKEN_META = {"vocab_size": 50, "max_len": 12, "pad_id": 0}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and do not stall when other jobs share the CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    return load_task("digits", DataConfig.tiny(), Path("unused"))


@pytest.fixture(scope="module")
def sst2(tmp_path_factory):
    if not SST2_DIR.is_dir():
        pytest.skip(f"SST-2 data not present at {SST2_DIR}: the sst2 tests need ../shared/data/sst2_glue")
    return load_task("sst2", DataConfig.tiny(sst2_dir=SST2_DIR), tmp_path_factory.mktemp("sst2"))


@pytest.fixture(scope="module")
def trained_images(digits):
    """Each tiny image model trained once on tiny digits (plus the kd student)."""
    cfg = TrainConfig.tiny()
    models, results = {}, {}
    for name in ("cnn-small", "mobilenet_v2", "resnet18", "cnn-small-kd"):
        torch.manual_seed(0)
        models[name] = build_model(digits.meta, name, 10, tiny=True)
        teacher = models.get(TEACHERS.get(name, ""))
        results[name] = train_model(models[name], digits, cfg, teacher=teacher)
    return models, results


def _tokens(batch: int, length: int = 12, vocab: int = 50) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(4, vocab, (batch, length), generator=gen)
    for row in range(batch):  # right padding of varying length, as the tokenizer produces
        x[row, 3 + row % (length - 3):] = 0
    return x


# --- data ---------------------------------------------------------------------------------------

def test_digits_loader_shapes_ids_and_stability(digits):
    assert digits.input_kind == "image" and digits.num_classes == 10
    assert digits.x_train.shape == (300, 1, 16, 16) and digits.x_train.dtype == torch.float32
    assert digits.x_eval.shape == (64, 1, 16, 16) and digits.y_eval.dtype == torch.int64
    assert 0.0 <= float(digits.x_train.min()) and float(digits.x_train.max()) <= 1.0
    assert len(set(digits.eval_ids)) == 64 and all(re.fullmatch(r"digits-\d{4}", i) for i in digits.eval_ids)
    again = load_task("digits", DataConfig.tiny(), Path("unused"))
    assert again.eval_ids == digits.eval_ids and torch.equal(again.x_train, digits.x_train)
    assert again.fingerprint() == digits.fingerprint()
    assert torch.equal(digits.calibration(16), digits.x_train[:16])


def test_digits_split_is_stratified_and_seeded():
    full = load_task("digits", DataConfig(max_train=None), Path("unused"))
    assert len(full.y_train) == 1257 and len(full.y_eval) == 540
    counts = torch.bincount(torch.cat([full.y_train, full.y_eval]), minlength=10).double()
    eval_counts = torch.bincount(full.y_eval, minlength=10).double()
    assert torch.all((eval_counts - 0.3 * counts).abs() <= 1.0)  # each class 30% +- one sample
    other = load_task("digits", DataConfig(seed=1, max_train=None), Path("unused"))
    assert other.eval_ids != full.eval_ids
    assert load_task("digits", DataConfig(max_train=None), Path("unused")).eval_ids == full.eval_ids


def test_sst2_loader_and_tokenizer(sst2, tmp_path):
    assert sst2.input_kind == "tokens" and sst2.num_classes == 2
    assert sst2.x_train.shape == (300, 32) and sst2.x_train.dtype == torch.int64
    assert sst2.x_eval.shape == (64, 32) and set(sst2.y_eval.tolist()) <= {0, 1}
    assert sst2.eval_ids[:2] == ["sst2-dev-0000", "sst2-dev-0001"] and len(set(sst2.eval_ids)) == 64
    assert (sst2.x_train == 0).any() and torch.all(sst2.x_train[:, 0] == sst2.x_train[0, 0])  # padding, [CLS]
    assert sst2.meta["vocab_size"] <= 1000 and sst2.meta["max_len"] == 32
    tokenizer = Path(sst2.meta["tokenizer"])
    assert tokenizer.is_file()
    before = tokenizer.stat().st_mtime_ns
    again = load_task("sst2", DataConfig.tiny(sst2_dir=SST2_DIR), tokenizer.parent)
    assert tokenizer.stat().st_mtime_ns == before and again.fingerprint() == sst2.fingerprint()


def test_sst2_default_tokenizer_is_reproducible(sst2, tmp_path):
    # tokenizers breaks count ties in hash order; ids are renumbered canonically, and at the default
    # size (20000 phrases, 4000 tokens) the learned vocabulary itself comes out the same every run.
    runs = [load_task("sst2", DataConfig(max_eval=16, sst2_dir=SST2_DIR), tmp_path / str(i)) for i in range(2)]
    assert runs[0].meta["vocab_size"] == 4000 and runs[0].x_train.shape == (20000, 64)
    assert runs[0].fingerprint() == runs[1].fingerprint()


def test_cifar10_loader_reads_python_batches(tmp_path):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), b"labels": list(range(10)) * 2}
        (tmp_path / name).write_bytes(pickle.dumps(batch))
    data = load_task("cifar10", DataConfig(max_train=50, max_eval=8, cifar10_dir=tmp_path), tmp_path)
    assert data.x_train.shape == (50, 3, 32, 32) and data.x_eval.shape == (8, 3, 32, 32)
    assert data.eval_ids[0] == "cifar10-test-00000" and float(data.x_train.max()) <= 1.0


def test_loader_bad_inputs_name_the_thing(tmp_path):
    with pytest.raises(InputError, match="imagenet"):
        load_task("imagenet", DataConfig(), tmp_path)
    with pytest.raises(InputError, match=re.escape(str(tmp_path / "nope"))):
        load_task("sst2", DataConfig(sst2_dir=tmp_path / "nope"), tmp_path)
    with pytest.raises(InputError, match="cifar10_dir"):
        load_task("cifar10", DataConfig(), tmp_path)
    with pytest.raises(InputError, match=re.escape(str(tmp_path))):
        load_task("cifar10", DataConfig(cifar10_dir=tmp_path), tmp_path)


# --- models -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODEL_NAMES["image"] + MODEL_NAMES["tokens"])
def test_every_model_returns_logits(digits, name):
    if name.startswith("bert"):
        meta, x, classes = TOKEN_META, _tokens(3), 2
    else:
        meta, x, classes = digits.meta, digits.x_eval[:3], 10
    model = build_model(meta, name, classes, tiny=True).eval()
    with torch.no_grad():
        logits = model(x)
    assert type(logits) is torch.Tensor and logits.shape == (3, classes) and logits.dtype == torch.float32


def test_bert_masks_padding_and_exposes_hf_model():
    torch.manual_seed(0)
    model = build_model(TOKEN_META, "bert-4", 2, tiny=True).eval()
    x = _tokens(4)
    with torch.no_grad():
        full = model(x)
        trimmed = model(x[:, :int((x != 0).sum(1).max())])
    torch.testing.assert_close(full, trimmed, atol=1e-5, rtol=1e-5)  # padding has no effect
    model.bert_model.prune_heads({1: [1]})
    model.bert_model.prune_heads({1: [1]})  # original numbering: already gone, nothing happens
    with torch.no_grad():
        assert model(x).shape == (4, 2)
    sizes = [layer.attention.self.query.out_features for layer in model.bert_model.bert.encoder.layer]
    assert sizes == [32, 16]  # tiny bert-4: 2 layers of 2 heads x 16


def test_bad_model_names(digits):
    with pytest.raises(InputError, match="resnet9000"):
        build_model(digits.meta, "resnet9000", 10)
    with pytest.raises(InputError, match="bert-2"):
        build_model(digits.meta, "bert-2", 10)  # image data, text model


def test_fx_static_int8_quantization_of_image_models(trained_images, digits):
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    engine = "x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm"
    torch.backends.quantized.engine = engine
    models, _ = trained_images
    for name in ("cnn-small", "mobilenet_v2", "resnet18"):
        model = models[name].eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prepared = prepare_fx(model, get_default_qconfig_mapping(engine), (digits.calibration(2),))
            with torch.no_grad():
                prepared(digits.calibration(128))
            quantized = convert_fx(prepared)
        fp32, int8 = predict_logits(model, digits.x_eval), predict_logits(quantized, digits.x_eval)
        agree = float((fp32.argmax(1) == int8.argmax(1)).float().mean())
        assert agree >= 0.8, f"{name}: int8 agrees with fp32 on only {agree:.0%}"


@pytest.mark.parametrize("name", MODEL_NAMES["tokens"])
def test_dynamic_int8_quantization_of_bert(name):
    torch.manual_seed(0)
    model = build_model(TOKEN_META, name, 2, tiny=True).eval()
    quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    assert any("quantized" in type(m).__module__ for m in quantized.modules())
    x = _tokens(32)
    with torch.no_grad():
        fp32, int8 = model(x), quantized(x)
    assert (fp32 - int8).abs().max() < 0.1 * fp32.abs().max() + 1e-3


# --- training -----------------------------------------------------------------------------------

def test_training_beats_chance_and_kd_student_trains(trained_images):
    _, results = trained_images
    for name, result in results.items():
        assert result["eval_accuracy"] > 0.5, f"{name}: {result}"  # chance is 0.1
        assert result["epochs"] == 8 and result["train_seconds"] > 0


def test_training_is_seeded(digits):
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model(digits.meta, "cnn-small", 10, tiny=True)
        train_model(model, digits, TrainConfig.tiny(epochs={"image": 2}))
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_kd_loss():
    torch.manual_seed(0)
    student, teacher, y = torch.randn(8, 3), torch.randn(8, 3), torch.randint(0, 3, (8,))
    assert float(kd_loss(teacher, teacher, y, 4.0, 1.0)) == pytest.approx(0.0, abs=1e-6)
    ce = nn.functional.cross_entropy(student, y)
    assert float(kd_loss(student, teacher, y, 4.0, 0.0)) == pytest.approx(float(ce))
    assert float(kd_loss(student, teacher, y, 4.0, 1.0)) > 0


def test_text_training_runs_with_a_teacher(sst2):
    cfg = TrainConfig.tiny(epochs={"tokens": 1})
    torch.manual_seed(0)
    teacher = build_model(sst2.meta, "bert-6", 2, tiny=True)
    train_model(teacher, sst2, cfg)
    student = build_model(sst2.meta, "bert-2-kd", 2, tiny=True)
    result = train_model(student, sst2, cfg, teacher=teacher)
    assert 0.0 <= result["eval_accuracy"] <= 1.0 and result["history"][0]["train_loss"] > 0


# --- the zoo ------------------------------------------------------------------------------------

def test_train_zoo_resumes_and_round_trips(tmp_path):
    data_cfg, train_cfg = DataConfig.tiny(), TrainConfig.tiny()
    first = train_zoo("digits", tmp_path, data_cfg, train_cfg, models=["cnn-small-kd", "cnn-small"], tiny=True)
    assert list(first["models"]) == ["resnet18", "cnn-small-kd", "cnn-small"]  # teacher first
    assert {m["status"] for m in first["models"].values()} == {"trained"}
    index = json.loads((tmp_path / "digits" / "zoo.json").read_text())
    record = index["models"]["cnn-small-kd"]
    assert record["teacher"] == "resnet18" and record["constructor"]["tiny"] is True
    assert record["params"] > 0 and record["seeds"] == {"train": 0, "data": 0}
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "digits").glob("*.pt")}
    assert set(mtimes) == {"resnet18.pt", "cnn-small-kd.pt", "cnn-small.pt"}

    again = train_zoo("digits", tmp_path, data_cfg, train_cfg, models=["cnn-small-kd", "cnn-small"], tiny=True)
    assert {m["status"] for m in again["models"].values()} == {"skipped"}
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "digits").glob("*.pt")}

    data = load_zoo_task(tmp_path, "digits")
    assert data.fingerprint() == load_task("digits", data_cfg, tmp_path).fingerprint()
    for name in mtimes:
        model = load_model(tmp_path, "digits", name[:-3])
        assert not model.training
        assert accuracy(model, data.x_eval, data.y_eval) == index["models"][name[:-3]]["eval_accuracy"]
        torch.testing.assert_close(predict_logits(model, data.x_eval),
                                   predict_logits(load_model(tmp_path, "digits", name[:-3]), data.x_eval))

    # A changed teacher config retrains the teacher and, through its checksum, the student.
    changed = TrainConfig.tiny(epochs={"image": 8, "resnet": 2})
    third = train_zoo("digits", tmp_path, data_cfg, changed, models=["cnn-small-kd", "cnn-small"], tiny=True)
    assert {k: v["status"] for k, v in third["models"].items()} == {
        "resnet18": "trained", "cnn-small-kd": "trained", "cnn-small": "skipped"}


def test_zoo_is_reproducible(tmp_path):
    hashes = []
    for run in ("a", "b"):
        train_zoo("digits", tmp_path / run, DataConfig.tiny(), TrainConfig.tiny(), models=["cnn-small"], tiny=True)
        hashes.append(json.loads((tmp_path / run / "digits" / "zoo.json").read_text())["models"]["cnn-small"]["sha256"])
    assert hashes[0] == hashes[1]  # same seed and config: byte-identical checkpoints


def test_sst2_zoo_keeps_its_tokenizer(tmp_path, sst2):
    cfg = DataConfig.tiny(sst2_dir=SST2_DIR)
    train_zoo("sst2", tmp_path, cfg, TrainConfig.tiny(epochs={"tokens": 1}), models=["bert-2"], tiny=True)
    assert list((tmp_path / "sst2").glob("tokenizer-*.json"))
    data = load_zoo_task(tmp_path, "sst2")
    assert data.eval_ids == sst2.eval_ids
    assert load_model(tmp_path, "sst2", "bert-2")(data.x_eval[:4]).shape == (4, 2)


def test_zoo_bad_inputs(tmp_path):
    assert set(DEFAULT_MODELS) == {"digits", "sst2"}
    with pytest.raises(InputError, match="imagenet"):
        train_zoo("imagenet", tmp_path, DataConfig.tiny(), TrainConfig.tiny())
    with pytest.raises(InputError, match="bert-2"):
        train_zoo("digits", tmp_path, DataConfig.tiny(), TrainConfig.tiny(), models=["bert-2"])
    with pytest.raises(InputError, match="zoo.json"):
        load_model(tmp_path, "digits", "cnn-small")
    with pytest.raises(InputError, match="zoo.json"):
        load_zoo_task(tmp_path, "digits")
    train_zoo("digits", tmp_path, DataConfig.tiny(), TrainConfig.tiny(epochs={"image": 1}), models=["cnn-small"],
              tiny=True)
    with pytest.raises(InputError, match="resnet18"):
        load_model(tmp_path, "digits", "resnet18")
    with pytest.raises(InputError, match="unknown task"):
        load_model(tmp_path, "mnist", "cnn-small")
    with pytest.raises(InputError, match="different data"):
        train_zoo("digits", tmp_path, DataConfig.tiny(seed=3), TrainConfig.tiny(), models=["cnn-small"], tiny=True)
    (tmp_path / "digits" / "cnn-small.pt").unlink()
    with pytest.raises(InputError, match=re.escape(str(tmp_path / "digits" / "cnn-small.pt"))):
        load_model(tmp_path, "digits", "cnn-small")
