"""Per-label metrics of conditional generators (docs/metrics.md, "Per-label metrics").

A conditional engine's evaluation samples carry the labels they were asked for: ``conditional_sample_fn`` draws
them explicitly from the training mix with each batch's seed (the same draw ``sample`` makes without labels, so the
images, FID and KID are unchanged), and ``eval_labels`` replays that draw, so the labels of every generated image
are known without keeping them (also under torchrun, where each rank generates a share of the batches). The
samples are then grouped by label and compared with the real images of that label, in Inception pool3 features
that are already there (the evaluation's generated features and the cached real ones): no extra sampling and no
extra Inception pass.

- ``kid/label/<y>``: KID of the samples asked for y against the real images labelled y, for every label with at
  least ``min_kid`` of each (unbiased, so usable on a few dozen images); ``kid/label_mean``: their mean.
- ``fid/label/<y>``: intra-FID (Miyato & Koyama 2018) where a label has at least ``min_fid`` of each, and
  ``fid/label_mean``. FID is biased upwards on small sets: compare it only between runs with the same counts.
- ``eval_n/label/<y>``: how many samples were asked for y (multi-label samples count for each of their labels).
- ``label_consistency``: the share of samples whose nearest real-label centroid (Euclidean, pool3) is one of the
  labels they were asked for; ``label_consistency/real``: the same for the real images themselves, each against
  centroids without it (leave-one-out): the rate a generator that reproduced the data would get.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import torch

#: fewest real and generated images of a label for its KID
PER_LABEL_MIN = 10
#: fewest real and generated images of a label for its intra-FID
INTRA_FID_MIN = 100
#: key prefixes of the per-label figures in an evaluation line
KID_PREFIX, FID_PREFIX, COUNT_PREFIX = "kid/label/", "fid/label/", "eval_n/label/"


@dataclass
class PerLabelOptions:
    min_kid: int = PER_LABEL_MIN
    min_fid: int = INTRA_FID_MIN
    kid_subsets: int = 100
    kid_subset_size: int = 1000


def supports_per_label(engine) -> bool:
    """Whether the engine's samples can be grouped by label: a conditional engine whose ``sample`` without labels
    is ConditionalEngine's (labels drawn from the training mix by the seed, which ``conditional_sample_fn`` makes
    explicit without changing an image). An engine that samples its own way (stackgan draws training captions)
    opts in with ``per_label_metrics = True`` once ``sample(n, seed, labels=spec.draw(n, seed))`` is what it
    wants measured; until then it is evaluated as before, without the per-label part."""
    from ..labels import ConditionalEngine

    if not getattr(engine, "conditional", False) or getattr(engine, "label_spec", None) is None:
        return False
    return bool(getattr(engine, "per_label_metrics", type(engine).sample is ConditionalEngine.sample))


def conditional_sample_fn(engine):
    """``sample_fn(k, seed)`` for evaluate_generator: k samples whose labels are drawn from the training mix with
    ``seed`` (``LabelSpec.draw``), given explicitly so that ``eval_labels`` can replay them."""
    spec = engine.label_spec
    return lambda k, s: engine.sample(n=k, seed=s, labels=spec.draw(k, s))


def eval_labels(spec, n: int, batch_size: int, seed: int) -> torch.Tensor:
    """The multi-hot labels [n, K] of evaluate_generator(conditional_sample_fn(engine), n=n, batch_size=batch_size,
    seed=seed)'s samples, in their order: batch b of k images drew ``spec.draw(k, batch seed b)``."""
    from .evaluate import _batch_seed

    rows = [spec.draw(min(batch_size, n - start), _batch_seed(seed, b))
            for b, start in enumerate(range(0, int(n), int(batch_size)))]
    return torch.cat(rows) if rows else torch.zeros(0, spec.num_classes)


def _as_masks(labels: Any, n: int, k: int, what: str) -> np.ndarray:
    y = labels.detach().cpu().numpy() if torch.is_tensor(labels) else np.asarray(labels)
    if y.shape != (n, k):
        raise ValueError(f"{what} labels of shape {tuple(y.shape)}; expected ({n}, {k}) for {n} images and {k} labels")
    return y > 0.5


def _sq_dists(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances [len(x), len(c)]."""
    return (x.square().sum(1, keepdim=True) - 2 * x @ c.T + c.square().sum(1)).clamp_min(0)


def label_consistency(fake_features: np.ndarray, fake_labels: Any, real_features: np.ndarray, real_labels: Any,
                      device=None) -> dict[str, float]:
    """The nearest-class-centroid check: ``label_consistency`` = share of generated images whose nearest real
    centroid (the mean pool3 feature of each label's real images) is a label they were asked for;
    ``label_consistency/real`` = the same for the real images, each measured against centroids computed without it.
    Labels without real images have no centroid (and a real image whose only label has one image is skipped)."""
    from .fid import _linalg_device

    k = np.shape(real_labels)[1]
    rm = _as_masks(real_labels, len(real_features), k, "real")
    fm = _as_masks(fake_labels, len(fake_features), k, "generated")
    dev = _linalg_device(device)
    xr = torch.as_tensor(np.asarray(real_features), dtype=torch.float64, device=dev)
    xf = torch.as_tensor(np.asarray(fake_features), dtype=torch.float64, device=dev)
    m = torch.as_tensor(rm, dtype=torch.float64, device=dev)              # [N, K]
    counts = m.sum(0)                                                        # n_k
    have = counts > 0
    if int(have.sum()) < 2:
        raise ValueError("label consistency needs real images of at least two labels")
    sums = m.T @ xr                                                          # S_k [K, D]
    cent = sums / counts.clamp_min(1)[:, None]
    out: dict[str, float] = {}
    if len(xf):
        d = _sq_dists(xf, cent)
        d[:, ~have] = float("inf")
        nearest = d.argmin(1).cpu().numpy()
        asked = fm.any(1)
        if asked.any():
            out["label_consistency"] = float(fm[np.arange(len(fm)), nearest][asked].mean())
    # leave-one-out for the reals: ||f - (S_k - f)/(n_k - 1)||^2 for the image's own labels, from dot products
    ff = xr.square().sum(1, keepdim=True)                                    # [N, 1]
    fs = xr @ sums.T                                                         # [N, K]
    ss = sums.square().sum(1)                                                # [K]
    loo_n = (counts - 1).clamp_min(1)
    loo = ff - 2 * (fs - ff) / loo_n + (ss - 2 * fs + ff) / loo_n.square()
    d = _sq_dists(xr, cent)
    own = m > 0
    d = torch.where(own, loo, d)
    d[:, ~have] = float("inf")
    d[own & (counts == 1)] = float("inf")                                    # no centroid without this image
    usable = torch.isfinite(d.masked_fill(~own, float("inf")).min(1).values).cpu().numpy()
    nearest = d.argmin(1).cpu().numpy()
    if usable.any():
        out["label_consistency/real"] = float(rm[np.arange(len(rm)), nearest][usable].mean())
    return out


def per_label_scores(fake_features: np.ndarray, fake_labels: Any, real_features: np.ndarray, real_labels: Any,
                     vocabulary: Iterable[str], seed: int = 0, device=None,
                     options: PerLabelOptions | None = None) -> dict[str, float]:
    """Every per-label figure (module doc) from the features and multi-hot labels of both sets."""
    from .fid import fid_between_features
    from .kid import kid

    opts = options or PerLabelOptions()
    vocab = list(vocabulary)
    fake_features, real_features = np.asarray(fake_features), np.asarray(real_features)
    fm = _as_masks(fake_labels, len(fake_features), len(vocab), "generated")
    rm = _as_masks(real_labels, len(real_features), len(vocab), "real")
    res: dict[str, float] = {}
    kids, fids = [], []
    for j, name in enumerate(vocab):
        nf, nr = int(fm[:, j].sum()), int(rm[:, j].sum())
        if nf:
            res[COUNT_PREFIX + name] = float(nf)
        if nf >= max(2, opts.min_kid) and nr >= max(2, opts.min_kid):
            v, _ = kid(real_features[rm[:, j]], fake_features[fm[:, j]], opts.kid_subsets, opts.kid_subset_size,
                       seed=seed + j, device=device)
            res[KID_PREFIX + name] = v
            kids.append(v)
        if nf >= max(2, opts.min_fid) and nr >= max(2, opts.min_fid):
            v = fid_between_features(real_features[rm[:, j]], fake_features[fm[:, j]], device)
            res[FID_PREFIX + name] = v
            fids.append(v)
    if kids:
        res["kid/label_mean"] = float(np.mean(kids))
    if fids:
        res["fid/label_mean"] = float(np.mean(fids))
    if int(rm.any(0).sum()) >= 2:
        res.update(label_consistency(fake_features, fm, real_features, rm, device))
    return res


def evaluate_conditional(engine, real, n: int = 2000, metrics="fid,kid,ms_ssim", batch_size: int = 50, device=None,
                         seed: int = 0, progress: bool = False, *, details: dict | None = None, shard: bool = False,
                         per_label: PerLabelOptions | None = None, **options) -> dict[str, float]:
    """``evaluate_generator`` for a conditional engine (the same images and numbers as sampling without labels),
    plus the per-label figures when ``real`` carries labels (an engines.labels.LabeledDataset: ``.labels``
    multi-hot rows in image order) and a feature metric (fid, kid, ...) was asked for. Under torchrun
    (``shard``) every rank calls this and rank 0 gets the numbers, as evaluate_generator."""
    from .evaluate import evaluate_generator
    from .fid import real_statistics
    from .inception import as_uint8_rgb, resolve_device
    from .sources import resize_uint8

    details = {} if details is None else details
    if not supports_per_label(engine):  # its own sampling (stackgan): the plain evaluation, as before
        return evaluate_generator(lambda k, s: engine.sample(n=k, seed=s), real, n=n, metrics=metrics,
                                  batch_size=batch_size, device=device, seed=seed, progress=progress,
                                  details=details, shard=shard, **options)
    res = evaluate_generator(conditional_sample_fn(engine), real, n=n, metrics=metrics, batch_size=batch_size,
                             device=device, seed=seed, progress=progress, details=details, shard=shard, **options)
    feats = details.get("fake_features")
    real_labels = getattr(real, "labels", None)
    if not res or feats is None or real_labels is None:
        return res
    spec = engine.label_spec
    if list(getattr(getattr(real, "label_spec", None), "vocabulary", spec.vocabulary)) != list(spec.vocabulary):
        raise ValueError("the real set's labels are not the engine's vocabulary: per-label metrics need the labels "
                         "the engine was trained with")
    size = (engine.image_size, engine.image_size)
    dev = resolve_device(device)
    stats = real_statistics(real.key, size, lambda: resize_uint8(as_uint8_rgb(real.images), size),
                            name=getattr(real, "name", "real"), device=dev, batch_size=batch_size)
    fake_labels = eval_labels(spec, len(feats), batch_size, seed)
    res = dict(res)
    res.update(per_label_scores(feats, fake_labels, stats.features, real_labels, spec.vocabulary, seed=seed,
                                device=dev, options=per_label))
    return res


def split_result(res: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """(the evaluation without the per-label entries, {label: {"kid": .., "fid": .., "n": ..}}) for tables."""
    main: dict[str, Any] = {}
    rows: dict[str, dict[str, float]] = {}
    for key, v in res.items():
        for prefix, col in ((KID_PREFIX, "kid"), (FID_PREFIX, "fid"), (COUNT_PREFIX, "n")):
            if key.startswith(prefix):
                rows.setdefault(key[len(prefix):], {})[col] = v
                break
        else:
            main[key] = v
    return main, rows


def per_label_text(res: dict[str, Any]) -> str:
    """The per-label part of an evaluation as a small table ('' when there is none): label, samples, KID, FID."""
    _, rows = split_result(res)
    if not rows:
        return ""
    width = max(5, *(len(k) for k in rows))
    lines = ["per label (samples asked for the label vs real images of it):",
             f"  {'label':<{width}}  {'samples':>7}  {'KID':>9}  {'intra-FID':>9}"]
    for name, r in rows.items():
        kid_txt = f"{r['kid']:.4g}" if "kid" in r else "-"
        fid_txt = f"{r['fid']:.4g}" if "fid" in r else "-"
        lines.append(f"  {name:<{width}}  {int(r.get('n', 0)):>7}  {kid_txt:>9}  {fid_txt:>9}")
    lines.append(f"  ('-': fewer than {PER_LABEL_MIN} (KID) / {INTRA_FID_MIN} (FID) real or generated images)")
    return "\n".join(lines)
