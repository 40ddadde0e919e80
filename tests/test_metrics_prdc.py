"""Precision/recall, density/coverage, FID∞ and the FID/KID intervals (engines.metrics.prdc, .small_n, .kid)."""
import math
import types
import warnings

import numpy as np
import pytest
import torch

from engines.metrics import fid as fidmod
from engines.metrics.evaluate import KNOWN_METRICS, evaluate_images, parse_metrics
from engines.metrics.fid import RealStats, feature_statistics, fid_between_features, frechet_distance
from engines.metrics.kid import kid, kid_and_interval
from engines.metrics.prdc import kth_neighbour_radii, prdc
from engines.metrics.small_n import (WeightedFID, fid_inf_counts, fid_infinity, fid_interval, half_samples,
                                     jackknife_interval)

# FID of fewer samples than 2048 dimensions warns; these tests measure exactly that regime on purpose
pytestmark = pytest.mark.filterwarnings("ignore::engines.metrics.fid.SmallSampleWarning")


# ---- precision / recall / density / coverage ----------------------------------------------------------
def _reference_prdc(real, fake, pr_k, dc_k):
    """The two references transcribed literally on a full distance matrix: stylegan2-ada's compute_pr (<=) and
    generative-evaluation-prdc's compute_prdc (density and coverage, <)."""
    def dist(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    def kth(x, k):
        return np.sort(dist(x, x), axis=1)[:, k]  # k + 1-th smallest, the point itself first

    d_fr = dist(fake, real)
    precision = (d_fr <= kth(real, pr_k)[None, :]).any(1).mean()
    recall = (d_fr.T <= kth(fake, pr_k)[None, :]).any(1).mean()
    r5 = kth(real, dc_k)
    density = (d_fr < r5[None, :]).sum(1).mean() / dc_k
    coverage = (d_fr.min(0) < r5).mean()
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


def test_hand_worked_example_in_one_dimension():
    real = np.array([[0.0], [1.0], [3.0], [7.0]])
    fake = np.array([[0.5], [2.9], [20.0]])
    # k = 1: real radii 1, 1, 2, 4; fake radii 2.4, 2.4, 17.1
    one = prdc(real, fake, pr_k=1, dc_k=1)
    assert one["precision"] == pytest.approx(2 / 3)   # 20 lies outside every real ball
    assert one["recall"] == 1.0                        # ... but its huge ball reaches 7: recall's outlier weakness
    assert one["density"] == pytest.approx((2 + 1 + 0) / 3)
    assert one["coverage"] == pytest.approx(3 / 4)     # 7's nearest sample is 4.1 away, its radius 4 (strict <)
    # k = 2: real radii 3, 2, 3, 6 -> balls hit 3, 4, 0; every real point has a sample inside its ball
    two = prdc(real, fake, ("density", "coverage"), dc_k=2)
    assert set(two) == {"density", "coverage"}
    assert two["density"] == pytest.approx(7 / 6)
    assert two["coverage"] == 1.0


def test_matches_the_reference_formulas_and_does_not_depend_on_blocking():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((120, 12))
    fake = rng.standard_normal((90, 12)) * 1.3 + 0.4
    want = _reference_prdc(real, fake, 3, 5)
    got = prdc(real, fake)
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-12), k
    small_blocks = prdc(real, fake, max_entries=150)  # one or two rows at a time
    assert small_blocks == got
    assert 0 < got["precision"] < 1 and 0 < got["recall"] < 1 and 0 < got["coverage"] < 1


def test_a_set_against_itself_and_a_collapsed_set():
    rng = np.random.default_rng(1)
    real = rng.standard_normal((200, 16))
    same = prdc(real, real)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert same["density"] >= 1.0  # every point is inside its own ball and its neighbours'
    collapsed = real[7] + 1e-3 * rng.standard_normal((200, 16))  # every sample is (nearly) one real image
    res = prdc(real, collapsed)
    assert res["precision"] == 1.0       # all samples look real ...
    assert res["recall"] <= 0.02         # ... but they reach almost none of the real set
    assert res["coverage"] <= 0.02
    # every sample hits exactly the real balls real[7] itself lies in
    r5 = np.sort(np.linalg.norm(real[:, None] - real[None], axis=-1), axis=1)[:, 5]
    assert res["density"] == pytest.approx((np.linalg.norm(real - real[7], axis=1) < r5).sum() / 5)
    outliers = rng.standard_normal((200, 16)) + 8.0
    far = prdc(real, outliers)
    assert far["precision"] == 0.0 and far["density"] == 0.0 and far["coverage"] == 0.0


def test_prdc_input_checks():
    x = np.zeros((3, 4))
    with pytest.raises(ValueError, match="at least 4 real images"):
        prdc(x, np.ones((10, 4)), ("precision",))
    with pytest.raises(ValueError, match="at least 6 generated"):
        prdc(np.random.rand(10, 4), np.random.rand(5, 4), ("coverage",))
    with pytest.raises(ValueError, match="mismatched feature sizes"):
        prdc(np.random.rand(10, 4), np.random.rand(10, 5))
    with pytest.raises(ValueError, match="asked for \\['fid'\\]"):
        prdc(np.random.rand(10, 4), np.random.rand(10, 4), ("precision", "fid"))
    with pytest.raises(ValueError, match="NaN"):
        prdc(np.full((10, 4), np.nan), np.random.rand(10, 4))
    r = kth_neighbour_radii(torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64), 2)
    assert r.tolist() == [3.0, 2.0, 3.0]


def test_metric_names_are_known():
    assert {"precision", "recall", "density", "coverage", "fid_inf"} <= set(KNOWN_METRICS)
    assert parse_metrics("fid,Precision,fid-inf") == ("fid", "precision", "fid_inf")
    assert "is" not in parse_metrics("all") and "coverage" in parse_metrics("all")


# ---- FID∞ and intervals ----------------------------------------------------------------------------------
def _gaussians(d=16, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d)) / math.sqrt(d)
    sigma_g = a @ a.T + 0.5 * np.eye(d)
    mu_g = 0.3 * rng.standard_normal(d)
    b = rng.standard_normal((d, d)) / math.sqrt(d)
    sigma_r, mu_r = b @ b.T + 0.5 * np.eye(d), np.zeros(d)
    real = RealStats(mu_r, sigma_r, rng.multivariate_normal(mu_r, sigma_r, 4 * d).astype(np.float32), "gauss")
    truth = frechet_distance(mu_r, sigma_r, mu_g, sigma_g)

    def draw(n, s):
        return np.random.default_rng(s).multivariate_normal(mu_g, sigma_g, n)
    return real, truth, draw


def test_weighted_fid_is_the_plain_fid_and_the_fid_of_a_subset():
    rng = np.random.default_rng(3)
    real, fake = rng.random((40, 64)), rng.random((50, 64)) ** 2
    wf = WeightedFID(fake, real)
    assert wf.cross  # 40 real features: the cross-product route
    assert wf(np.ones(50)) == pytest.approx(fid_between_features(real, fake), rel=1e-9)
    w = np.zeros(50)
    w[:20] = 1  # fewer kept images than real ones: the [kept, kept] route
    assert wf(w) == pytest.approx(fid_between_features(real, fake[:20]), rel=1e-7)
    w[:45] = 1
    assert wf(w) == pytest.approx(fid_between_features(real, fake[:45]), rel=1e-9)
    st = RealStats(*feature_statistics(real), real.astype(np.float32), "k")
    via_stats = WeightedFID(fake, st, max_cross=10)  # forced through d x d statistics
    assert not via_stats.cross and via_stats(w) == pytest.approx(wf(w), rel=1e-7)
    with pytest.raises(ValueError, match="non-negative counts"):
        wf(-np.ones(50))


def test_fid_infinity_lands_on_the_known_distance_where_plain_fid_does_not():
    real, truth, draw = _gaussians()
    errs_inf, errs_plain = [], []
    for s in range(8):  # one FID∞ is noisy (one draw per point of its line, as the reference): average 8
        fake = draw(200, s)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fidmod.SmallSampleWarning)
            plain = fidmod.fid_from_features(fake, real)
        inf = fid_infinity(fake, real, seed=s)
        assert list(inf.counts) == list(np.unique(np.linspace(100, 200, 15).astype(int)))
        assert inf.slope > 0  # FID falls with n
        errs_inf.append(inf.value - truth)
        errs_plain.append(plain - truth)
    assert min(errs_plain) > 0.1 * truth                     # plain FID at n = 200 is biased upwards
    assert abs(np.mean(errs_inf)) < 0.15 * np.mean(errs_plain)  # the extrapolation removes most of it
    assert abs(np.mean(errs_inf)) < 0.05 * truth
    with pytest.raises(ValueError, match="at least 4"):
        fid_inf_counts(3)
    assert list(fid_inf_counts(50000)[[0, -1]]) == [5000, 50000]  # the reference's range at its n


def test_fid_interval_contains_the_value_narrows_with_n_and_covers_the_spread_of_fresh_draws():
    real, truth, draw = _gaussians(d=8, seed=1)
    widths = {}
    for n in (100, 1600):
        fake = draw(n, 0)
        point = fidmod.fid_from_features(fake, real)
        lo, hi = fid_interval(fake, real, point, seed=0)
        assert lo < point < hi
        widths[n] = hi - lo
    assert widths[1600] < widths[100] / 2.5  # ~ 1/sqrt(n): 4x narrower for 16x the images
    # calibration: the spread of FID over fresh draws of n images is what the interval says
    n = 400
    points = np.array([fidmod.fid_from_features(draw(n, 100 + s), real) for s in range(40)])
    half = np.array([np.diff(fid_interval(draw(n, 100 + s), real, 0.0, replicates=60, seed=s))[0] / 2
                     for s in range(8)])
    z_std = half.mean() / 1.959964
    assert 0.6 < z_std / points.std(ddof=1) < 1.8


def test_kid_interval_contains_kid_narrows_and_matches_fresh_draws():
    rng = np.random.default_rng(5)
    real = rng.standard_normal((300, 16))

    def draw(n, s):
        return np.random.default_rng(s).standard_normal((n, 16)) * 1.1 + 0.1
    widths = {}
    for n in (100, 1600):
        k, std, (lo, hi) = kid_and_interval(real, draw(n, 0), subsets=50, subset_size=100)
        assert (k, std) == kid(real, draw(n, 0), subsets=50, subset_size=100)
        assert lo < k < hi
        widths[n] = hi - lo
    assert widths[1600] < widths[100] / 2
    n = 300
    # subsets of all 300 images: every subset is the whole set, one is enough
    values = np.array([kid(real, draw(n, 10 + s), subsets=1, subset_size=n)[0] for s in range(30)])
    halves = [np.diff(kid_and_interval(real, draw(n, 10 + s), subsets=1, subset_size=n, replicates=60)[2])[0]
              / 2 / 1.959964 for s in range(6)]
    assert 0.6 < np.mean(halves) / values.std(ddof=1) < 1.8
    # the Gram matrix read in row blocks gives the same interval
    a = kid_and_interval(real, draw(200, 1), subsets=20, subset_size=100)
    b = kid_and_interval(real, draw(200, 1), subsets=20, subset_size=100, max_gram=300 * 50)
    assert b[0] == pytest.approx(a[0], rel=1e-9) and b[2] == pytest.approx(a[2], rel=1e-9)


def test_half_samples_and_interval_helpers():
    w = half_samples(11, 5, seed=0)
    assert w.shape == (5, 11) and (w.sum(1) == 5).all() and set(np.unique(w)) == {0.0, 1.0}
    assert len({tuple(r) for r in w}) == 5
    lo, hi = jackknife_interval(10.0, [1.0, 2.0, 3.0])
    assert (lo, hi) == pytest.approx((10 - 1.959964, 10 + 1.959964), rel=1e-6)
    with pytest.raises(ValueError, match="at least 4"):
        half_samples(3, 5, 0)
    with pytest.raises(ValueError, match="level"):
        jackknife_interval(1.0, [1.0, 2.0], level=1.5)


# ---- through evaluate_images (the trainer's and `pokelab eval`'s route) ------------------------------
def test_evaluate_images_logs_the_new_keys(monkeypatch, tmp_path):
    """The new metrics and intervals from the features evaluate computes (the network replaced by a fixed
    random projection so the test is quick); real features come from the statistics cache."""
    from engines.metrics import evaluate as ev
    from engines.metrics import fid as fm

    proj = torch.from_numpy(np.random.default_rng(0).random((3 * 8 * 8, 2048))).float()

    def fake_net(x, dev, batch_size=50, progress=False):
        return (x.reshape(len(x), -1).float() / 255) @ proj

    monkeypatch.setenv("POKELAB_CACHE", str(tmp_path))
    fm.clear_memory_cache()
    monkeypatch.setattr(ev, "features_of_batch", lambda x, dev: fake_net(x, dev))
    monkeypatch.setattr(fm, "inception_features", lambda imgs, **k: fake_net(imgs, None).numpy())
    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (40, 3, 8, 8), generator=g, dtype=torch.uint8)
    fake = torch.randint(0, 256, (30, 3, 8, 8), generator=g, dtype=torch.uint8)
    real_set = types.SimpleNamespace(images=real, key="prdc-test", name="t")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fidmod.SmallSampleWarning)
        res = evaluate_images(fake, real_set, metrics="fid,kid,precision,recall,density,coverage,fid_inf",
                              kid_subset_size=20)
        none = evaluate_images(fake, real_set, metrics="fid,kid", intervals=0)
    assert {"fid", "fid_lo", "fid_hi", "kid", "kid_std", "kid_lo", "kid_hi", "fid_inf", "precision", "recall",
            "density", "coverage", "eval_n", "eval_seconds"} == set(res)
    assert res["fid_lo"] < res["fid"] < res["fid_hi"] and res["kid_lo"] < res["kid"] < res["kid_hi"]
    assert res["fid_inf"] < res["fid"]  # the small-n bias taken out
    assert "fid_lo" not in none and "kid_lo" not in none and none["fid"] == pytest.approx(res["fid"], rel=1e-12)
    feats_r, feats_f = fake_net(real, None).numpy(), fake_net(fake, None).numpy()
    want = prdc(feats_r, feats_f)
    for k in want:
        assert res[k] == pytest.approx(want[k])
