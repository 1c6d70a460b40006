"""Scoring a level: the images its family makes to score (``Family.eval_pairs``), FID/IS/KID
of each direction, the headline row, the sample grid, and the verdict against dense."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from .. import gans as _gans
from .._io import atomic_write
from .errors import SearchError

__all__ = ["evaluate_models", "evaluate_checkpoints", "check_extractor", "save_samples",
           "load_eval_data", "load_train_data", "fid_size_note", "INCEPTION_MIN_IMAGES"]

#: per-direction metrics carried into the headline row
_KEYS = ("fid", "is_mean", "is_std", "kid_mean", "kid_std", "label_kept")


def check_extractor(extractor: str, inception_weights=None) -> None:
    """:class:`SearchError` when the feature extractor cannot run here: the Inception weights
    are missing (lthgan never downloads them) or are not Inception-v3 weights. The file is
    loaded and checked now, before any training."""
    from .. import metrics as _metrics

    if extractor == "inception":
        if inception_weights is None and not _metrics.inception_cache_path().is_file():
            raise SearchError(
                "extractor inception needs the Inception-v3 weights and lthgan never downloads them: "
                f"pass inception_weights FILE (fetch {_metrics.inception_url()} on a connected "
                f"machine), or put the file at {_metrics.inception_cache_path()}",
                "extractor", "inception_weights")
        try:
            _metrics.check_inception_weights(inception_weights)
        except _metrics.MetricsError as e:
            raise SearchError(f"inception_weights: {e}", "inception_weights") from None
    elif inception_weights is not None:
        raise SearchError(f"inception_weights applies to extractor inception, not {extractor}",
                          "inception_weights", "extractor")


def _data_error(family, data: str, e: Exception) -> SearchError:
    return SearchError(f"data {data!r}: {e}", "data", "data_root", "download")


def load_train_data(family, data: str, resolution: int, root=None, download: bool = False):
    """The training split; data problems raise :class:`SearchError`."""
    from .. import data as _data

    try:
        return family.load_data(data, "train", resolution, root, download)
    except (_data.DataError, FileNotFoundError, ValueError) as e:
        raise _data_error(family, data, e) from None


def load_eval_data(family, data: str, resolution: int, root=None, download: bool = False, train=None,
                   reference: str | None = None):
    """What a family's models are scored on (:class:`lthgan.gans.EvalData`): the ``reference``
    split (default the family's, the paper's protocol) and, for a translation GAN, the test
    images it translates. ``train`` is reused for the training split."""
    from .. import data as _data

    try:
        return family.load_eval_data(data, resolution, root, download, reference=reference, train=train)
    except (_data.DataError, FileNotFoundError, ValueError) as e:
        raise _data_error(family, data, e) from None


def evaluate_models(task, models: Mapping[str, nn.Module], eval_data, *, n_samples: int | None,
                    extractor: str, inception_weights=None, seed: int = 0, device=None,
                    with_labels: bool = True) -> tuple[dict, list]:
    """Score ``models`` (from ``trainer.eval_models()``): returns the metrics row and the
    :class:`lthgan.gans.EvalPair` list. The row holds each direction's metrics under
    ``directions``; its headline ``fid``/``is_mean``/``kid_mean``/``label_kept`` are the one
    direction's, or the mean over the directions."""
    from .. import metrics as _metrics

    eval_data = _gans.EvalData.of(eval_data)
    if n_samples is None:  # every evaluation image
        n_samples = eval_data.size()
    pairs = _gans.eval_pairs(task, models, eval_data, n_samples, seed=seed)
    per: dict[str, dict] = {}
    for p in pairs:
        m = dict(_metrics.evaluate(p.fake, p.real, extractor=extractor,
                                   inception_weights=inception_weights, device=device))
        if with_labels and p.source_labels is not None:
            m["label_kept"] = float(_metrics.label_kept(p.fake, p.source_labels))
        per[p.direction] = {k: _plain(v) for k, v in m.items()}
    first = next(iter(per.values()))
    row: dict[str, Any] = {"extractor": extractor, "extractor_weights": first.get("extractor_weights"),
                           "feature_layer_fid": first.get("feature_layer_fid"),
                           "reference": _split_of(eval_data.reference)}
    if len(per) == 1:
        (d, m), = per.items()
        row.update({k: m.get(k) for k in _KEYS})
        row["verdict_on"] = f"FID of {d}"
        row["n_fake"], row["n_real"] = m.get("n_fake"), m.get("n_real")
    else:
        for k in _KEYS:
            vals = [m.get(k) for m in per.values()]
            row[k] = sum(vals) / len(vals) if all(v is not None for v in vals) else None
        row["verdict_on"] = "FID of each of " + " and ".join(per)
        row["n_fake"] = {d: m.get("n_fake") for d, m in per.items()}
        row["n_real"] = {d: m.get("n_real") for d, m in per.items()}
    row["directions"] = per
    return row, pairs


def _split_of(data) -> str | None:
    first = data[0] if isinstance(data, (tuple, list)) else data
    return getattr(first, "split", None)


#: below this many images per side, an Inception FID is strongly biased (the features are 2048-d)
INCEPTION_MIN_IMAGES = 2048


def fid_size_note(extractor: str, n_fake: int, n_real: int) -> str | None:
    """A warning when an Inception FID would use fewer than 2,048 images on a side: its bias
    then dominates differences between models (compare only FIDs of equal sample sizes)."""
    if extractor == "inception" and min(n_fake, n_real) < INCEPTION_MIN_IMAGES:
        return (f"warning: Inception FID on {n_fake} generated and {n_real} reference images; below "
                f"{INCEPTION_MIN_IMAGES} per side it is strongly biased, so compare it only with FIDs of "
                "the same sample sizes")
    return None


def _plain(v):
    if isinstance(v, Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            return v.item()
        except (TypeError, ValueError):
            return v
    return v





def save_samples(path, family, pairs, eval_data) -> None:
    """The level's sample grid (``Family.sample_grid``) as a PNG."""
    from torchvision.utils import save_image

    images, nrow = family.sample_grid(pairs, _gans.EvalData.of(eval_data))
    imgs = (images.float().clamp(-1, 1) + 1) / 2
    atomic_write(path, lambda tmp: save_image(imgs, tmp, nrow=nrow, padding=2, format="png"))


def evaluate_checkpoints(path, *, data: str | None = None, data_root=None, extractor: str | None = None,
                         inception_weights=None, eval_samples: int | None = None, seed: int | None = None,
                         device: str | None = None) -> list[dict]:
    """``lthgan eval``: score the checkpoints at ``path`` (a checkpoint file, a level folder,
    every finished level of a run directory, or ``RUN_DIR/init``). Settings not given come
    from the run the checkpoint belongs to, else from its family's defaults."""
    from .. import prune as _prune
    from .checkpoints import model_from_checkpoint
    from .config import check_device, is_embedded
    from .rundir import eval_checkpoints, find_run_dir

    ckpts = eval_checkpoints(path)
    run = find_run_dir(ckpts[0])
    record = run.read_config() if run is not None else {}
    stored, resolved = record.get("search", {}), record.get("resolved", {})
    dev = check_device(device) if device else ("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for ck in ckpts:
        level = run.level_at(ck) if run is not None else None
        if level is not None and level.done:
            level.verify()  # a damaged level is named, not scored
        task, models, meta = model_from_checkpoint(ck, device=dev)
        fam = _gans.family(task.name)
        d = data or resolved.get("data") or fam.default_data
        ext = extractor or resolved.get("extractor") or ("digits" if is_embedded(fam, d) else "inception")
        check_extractor(ext, inception_weights)
        n = eval_samples or resolved.get("eval_samples") or fam.eval_samples.get(stored.get("preset") or "quick")
        evald = load_eval_data(fam, d, task.config.resolution, data_root or stored.get("data_root"),
                               reference=stored.get("fid_reference"))
        row, _ = evaluate_models(task, models, evald, n_samples=n, extractor=ext,
                                 inception_weights=inception_weights,
                                 seed=seed if seed is not None else int(stored.get("seed", 0)), device=dev)
        sp = {}
        for g in task.generators:
            r = _prune.sparsity_report(task.models[g], types=stored.get("layers", "conv"))
            sp[g] = {"sparsity": r.prunable_sparsity, "sparsity_overall": r.overall_sparsity}
        row.update(checkpoint=str(ck), level=meta.get("level"), data=d, sparsity=sp)
        rows.append(row)
    return rows
