"""Cheap input features of each evaluation sample, the bundle's ``features`` table (``traces.features``).

They are computed from the input alone, with no model, in microseconds per sample, so a router
could compute them for a live request before choosing where to send it. Each is here because it
could plausibly signal a sample that a small model gets wrong:

Images (``input_kind == "image"``; pixels in [0, 1], colour averaged to grey):

- ``mean_intensity``: how much of the frame is stroke; very faint or very heavy digits are rare
  in training and easier to confuse.
- ``intensity_std``: contrast; a low-contrast image blurs the edges a small network relies on.
- ``ink_share``: share of pixels brighter than 0.5, the "solid" part of the strokes; thin or
  broken strokes leave too little to recognise.
- ``edge_energy``: mean absolute difference between neighbouring pixels (right and down,
  averaged); a convoluted shape (many edges) or a blurred one (few) departs from the typical one.
- ``centroid_offset``: distance of the intensity-weighted centre of mass from the image centre,
  as a share of the image side; off-centre inputs stress the receptive fields of a small model.

Token ids (``input_kind == "tokens"``; [PAD] = 0, [UNK] = 1, [CLS] = 2, [SEP] = 3, see
``measure.data.SPECIAL_TOKENS``):

- ``token_count``: word pieces in the sample, [CLS]/[SEP]/[PAD] excluded; a short text carries
  little evidence, a long one may mix opinions.
- ``oov_share``: share of them that are [UNK]; the model cannot see those words at all.
- ``truncated``: 1 when the ids fill ``max_len`` (the text was cut, possibly its verdict).
- ``subword_share``: share of continuation pieces (``##...``): rare words split into pieces that
  a small model has learned less well. Only when the task's tokenizer file is at hand
  (``TaskData.meta["tokenizer"]``); it is a lookup in its vocabulary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from traces.errors import InputError

from .data import SPECIAL_TOKENS, TaskData

PAD_ID, UNK_ID, CLS_ID, SEP_ID = range(len(SPECIAL_TOKENS))
INK_THRESHOLD = 0.5


def sample_features(task: TaskData) -> pd.DataFrame:
    """One row per evaluation sample: ``sample_id`` then the task's features (see the module)."""
    x = task.x_eval.detach().cpu().numpy()
    if task.input_kind == "image":
        columns = image_features(x)
    elif task.input_kind == "tokens":
        columns = token_features(x, _continuation_ids(task.meta.get("tokenizer")))
    else:
        raise InputError(f"task {task.task}", f"no features for input kind {task.input_kind!r}; "
                         "expected image or tokens")
    if len(task.eval_ids) != x.shape[0]:
        raise InputError(f"task {task.task}", f"{len(task.eval_ids)} evaluation ids for {x.shape[0]} samples")
    return pd.DataFrame({"sample_id": list(task.eval_ids), **columns})


def image_features(images: np.ndarray) -> dict[str, np.ndarray]:
    """Pixel statistics of images [N, C, H, W] (or [N, H, W]) with values in [0, 1]."""
    grey = images.astype(np.float64)
    grey = grey.mean(axis=1) if grey.ndim == 4 else grey
    n, height, width = grey.shape
    flat = grey.reshape(n, -1)
    edges = (np.abs(np.diff(grey, axis=2)).mean(axis=(1, 2)) if width > 1 else np.zeros(n)) \
        + (np.abs(np.diff(grey, axis=1)).mean(axis=(1, 2)) if height > 1 else np.zeros(n))
    mass = flat.sum(axis=1)
    rows, cols = np.arange(height) + 0.5, np.arange(width) + 0.5   # pixel centres
    safe = np.where(mass > 0, mass, 1.0)
    centre_row = np.where(mass > 0, (grey.sum(axis=2) * rows).sum(axis=1) / safe, height / 2)
    centre_col = np.where(mass > 0, (grey.sum(axis=1) * cols).sum(axis=1) / safe, width / 2)
    offset = np.hypot(centre_row - height / 2, centre_col - width / 2) / max(height, width)
    return {"mean_intensity": flat.mean(axis=1), "intensity_std": flat.std(axis=1),
            "ink_share": (flat > INK_THRESHOLD).mean(axis=1), "edge_energy": edges / 2.0,
            "centroid_offset": offset}


def token_features(ids: np.ndarray, continuation_ids: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Counts over token ids [N, L] (padded with 0); ``continuation_ids``: the ids of ``##``
    pieces (None: no ``subword_share`` column)."""
    ids = np.asarray(ids, dtype=np.int64)
    words = ~np.isin(ids, (PAD_ID, CLS_ID, SEP_ID))
    count = words.sum(axis=1)
    per_word = np.maximum(count, 1)  # an empty text has no unknown words and no pieces
    out = {"token_count": count.astype(np.float64),
           "oov_share": (ids == UNK_ID).sum(axis=1) / per_word,
           "truncated": (ids[:, -1] != PAD_ID).astype(np.float64)}
    if continuation_ids is not None:
        out["subword_share"] = (np.isin(ids, continuation_ids) & words).sum(axis=1) / per_word
    return out


def _continuation_ids(tokenizer_path) -> np.ndarray | None:
    if not tokenizer_path or not Path(tokenizer_path).is_file():
        return None
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(tokenizer_path)).get_vocab()
    return np.array(sorted(i for token, i in vocab.items() if token.startswith("##")), dtype=np.int64)


def profile_task_data(profile) -> TaskData:
    """The evaluation data a bundle of this profile was measured on: the zoo's own (checked
    against its fingerprint) when the zoo is there, else, for a task that needs no tokenizer,
    the profile's data settings."""
    from .data import DataConfig, load_task
    from .zoo import INDEX, load_zoo_task

    if (Path(profile.zoo_dir) / profile.task / INDEX).is_file():
        return load_zoo_task(profile.zoo_dir, profile.task)
    if profile.task == "sst2":
        raise InputError(str(Path(profile.zoo_dir) / profile.task), "no zoo here: the sst2 features need the "
                         "tokenizer the zoo was trained with (measure train makes it)")
    cfg = DataConfig(seed=profile.seed, **{k: v for k, v in profile.data.items() if k != "task"})
    return load_task(profile.task, cfg, Path(profile.zoo_dir) / profile.task)
