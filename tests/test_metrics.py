"""engines.metrics: FID/KID/MS-SSIM/LPIPS/novelty/IS, the statistics cache and evaluate_generator."""
import math
import types
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from engines.metrics import MetricUnavailable
from engines.metrics import fid as fidmod
from engines.metrics.evaluate import evaluate_generator, evaluate_images, find_nearest_training_images
from engines.metrics.fid import feature_statistics, frechet_distance, real_statistics, stats_key
from engines.metrics.inception import inception_features, inception_score, inception_score_from_probs
from engines.metrics.kid import kid
from engines.metrics.msssim import collapse_flag, ms_ssim, ms_ssim_scales, scale_weights
from engines.metrics.novelty import novelty
from engines.metrics.sources import content_key

SHARED_POKEMON = "/work/shared/datasets/pokemon/dreamworld-256"


def _pokemon(ids, size):
    out = []
    for i in ids:
        im = Image.open(f"{SHARED_POKEMON}/{i}.png").convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        out.append(np.asarray(Image.alpha_composite(bg, im).convert("RGB").resize((size, size), Image.BICUBIC)))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def real32(request):
    import os

    if not os.path.isdir(SHARED_POKEMON):
        pytest.skip("shared Pokémon images not available")
    imgs = _pokemon(range(1, 33), 32)
    return types.SimpleNamespace(images=imgs, key=content_key(imgs), name="poke32",
                                 files=[f"{i}.png" for i in range(1, 33)], size=32)


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    """One statistics cache for the tests that run the real network (real stats computed once)."""
    with pytest.MonkeyPatch.context() as mp:
        d = tmp_path_factory.mktemp("stats-cache")
        mp.setenv("POKELAB_CACHE", str(d))
        fidmod.clear_memory_cache()
        yield d / "fid-stats"
    fidmod.clear_memory_cache()


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POKELAB_CACHE", str(tmp_path / "cache"))
    fidmod.clear_memory_cache()
    yield tmp_path / "cache" / "fid-stats"
    fidmod.clear_memory_cache()


# ---- Fréchet distance -------------------------------------------------------------------------
def _random_stats(rng, n, d, shift=0.0):
    f = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * 0.3 + shift
    return feature_statistics(f)


def test_frechet_fast_path_equals_reference_sqrtm():
    rng = np.random.default_rng(0)
    m1, s1 = _random_stats(rng, 300, 64)
    m2, s2 = _random_stats(rng, 300, 64, shift=0.5)
    ref = frechet_distance(m1, s1, m2, s2, method="sqrtm")
    fast = frechet_distance(m1, s1, m2, s2)
    assert ref > 1.0
    assert fast == pytest.approx(ref, rel=1e-8)
    # from features (singular values of the cross product) = from statistics, both regimes
    f1, f2 = rng.random((40, 64)), rng.random((50, 64)) ** 2
    via_stats = frechet_distance(*feature_statistics(f1), *feature_statistics(f2), method="sqrtm")
    assert fidmod.fid_between_features(f1, f2) == pytest.approx(via_stats, rel=1e-6)  # sqrtm: singular product
    f1, f2 = rng.random((90, 8)), rng.random((70, 8)) ** 2  # 90*70 > 8^2: the statistics route
    via_stats = frechet_distance(*feature_statistics(f1), *feature_statistics(f2), method="sqrtm")
    assert fidmod.fid_between_features(f1, f2) == pytest.approx(via_stats, rel=1e-8)
    # closed form for diagonal covariances: |dmu|^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = rng.uniform(0.1, 2, 16), rng.uniform(0.1, 2, 16)
    mu = rng.standard_normal(16)
    want = float(mu @ mu + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    assert frechet_distance(mu, np.diag(a), np.zeros(16), np.diag(b)) == pytest.approx(want, rel=1e-10)


def test_frechet_singular_covariances_do_not_crash():
    rng = np.random.default_rng(1)
    # 5 samples in 32 dimensions: rank-4 covariances, a singular product
    m1, s1 = feature_statistics(rng.standard_normal((5, 32)))
    m2, s2 = feature_statistics(rng.standard_normal((5, 32)) + 1)
    for method in ("eigh", "sqrtm"):
        v = frechet_distance(m1, s1, m2, s2, method=method)
        assert math.isfinite(v) and v > 0
    assert frechet_distance(m1, s1, m2, s2, method="sqrtm") == pytest.approx(frechet_distance(m1, s1, m2, s2),
                                                                              rel=1e-4)
    assert abs(frechet_distance(m1, s1, m1, s1)) < 1e-7 * np.trace(s1)  # zero up to rounding


def test_frechet_rejects_broken_statistics():
    mu, s = np.zeros(4), np.eye(4)
    with pytest.raises(ValueError, match="mismatched"):
        frechet_distance(mu, s, np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(mu, s, np.full(4, np.nan), s)
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(np.zeros((1, 4)))


def test_small_sample_warning():
    rng = np.random.default_rng(0)
    with pytest.warns(fidmod.SmallSampleWarning, match="fewer than the 2048"):
        fidmod.fid_from_features(rng.random((10, 8)), rng.random((10, 8)))


# ---- KID ---------------------------------------------------------------------------------------
def _mmd2_direct(x, y):
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def test_kid_equals_direct_formula_on_small_features():
    rng = np.random.default_rng(3)
    x, y = rng.random((12, 5)), rng.random((12, 5)) + 0.2
    mean, std = kid(x, y, subsets=1, subset_size=100)  # one subset = every sample (a permutation)
    assert mean == pytest.approx(_mmd2_direct(x, y), rel=1e-10)
    assert std == 0.0
    # subsets smaller than the sets: the same index draws by hand
    mean, std = kid(x, y, subsets=4, subset_size=6, seed=7)
    r = np.random.default_rng(7)
    vals = []
    for _ in range(4):
        ix, iy = r.choice(12, 6, replace=False), r.choice(12, 6, replace=False)
        vals.append(_mmd2_direct(x[ix], y[iy]))
    assert mean == pytest.approx(np.mean(vals), rel=1e-10)
    assert std == pytest.approx(np.std(vals), rel=1e-8)
    # the per-subset route (huge sets) gives the same numbers as the precomputed Gram route
    assert kid(x, y, subsets=4, subset_size=6, seed=7, max_gram=0) == pytest.approx((mean, std), rel=1e-10)


def test_kid_same_distribution_near_zero_shifted_clearly_positive():
    rng = np.random.default_rng(0)
    d = 64
    a, b = rng.random((400, d)), rng.random((400, d))
    mean, std = kid(a, b, subsets=50, subset_size=100)
    assert abs(mean) < 3 * std
    shifted = rng.random((400, d)) + 0.3
    mean_s, std_s = kid(a, shifted, subsets=50, subset_size=100)
    assert mean_s > 10 * std_s and mean_s > 20 * abs(mean)
    with pytest.raises(ValueError, match="at least 2"):
        kid(a[:1], b)


# ---- MS-SSIM ----------------------------------------------------------------------------------
def test_scales_follow_image_size():
    assert [ms_ssim_scales(s) for s in (256, 192, 161, 160, 128, 64, 32, 21, 20, 11)] == [5, 5, 5, 4, 4, 3, 2, 2, 1, 1]
    with pytest.raises(ValueError, match="at least 11 px"):
        ms_ssim_scales(10)
    assert scale_weights(5) == (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
    w4 = scale_weights(4)
    assert sum(w4) == pytest.approx(1.0) and w4[0] / w4[1] == pytest.approx(0.0448 / 0.2856)


def test_ms_ssim_matches_pytorch_msssim():
    pytorch_msssim = pytest.importorskip("pytorch_msssim")
    g = torch.Generator().manual_seed(0)
    base = torch.rand(4, 3, 24, 24, generator=g)
    x = torch.nn.functional.interpolate(base, size=192, mode="bilinear", align_corners=False) * 255
    y = (x + torch.randn(x.shape, generator=g) * 25).clamp(0, 255)
    y[2] = x[3]  # an unrelated pair too
    ours = ms_ssim(x, y, data_range=255)
    ref = pytorch_msssim.ms_ssim(x, y, data_range=255, size_average=False)
    assert ours.shape == (4,)
    assert torch.allclose(ours, ref, atol=1e-5), (ours, ref)
    # truncated scales = the reference with the renormalised weights
    ours4 = ms_ssim(x, y, data_range=255, scales=4)
    ref4 = pytorch_msssim.ms_ssim(x, y, data_range=255, size_average=False, weights=list(scale_weights(4)))
    assert torch.allclose(ours4, ref4, atol=1e-5)
    # uint8 at 128 px: 4 scales, identical images -> 1
    u = (x[:, :, :128, :128]).round().to(torch.uint8)
    assert torch.allclose(ms_ssim(u, u), torch.ones(4), atol=1e-6)
    with pytest.raises(ValueError, match="data_range"):
        ms_ssim(x, y)


def test_collapse_flag_fires_on_collapsed_generator_only(real32):
    real = real32.images
    one = real[5].float() / 127.5 - 1

    def collapsed(k, seed):
        g = torch.Generator().manual_seed(seed)
        return (one + 0.01 * torch.randn((k, *one.shape), generator=g)).clamp(-1, 1)

    res = evaluate_generator(collapsed, real32, n=16, metrics=("ms_ssim",), batch_size=8)
    assert res["ms_ssim/fake"] > 0.9
    assert res["ms_ssim/real"] < 0.5
    assert res["collapse"] == 1.0
    assert set(res) == {"ms_ssim/fake", "ms_ssim/real", "collapse", "eval_n", "eval_seconds"}
    # healthy: real images split in two halves
    healthy = evaluate_images(real[:16], real[16:], metrics="ms_ssim")
    assert healthy["collapse"] == 0.0
    assert abs(healthy["ms_ssim/fake"] - healthy["ms_ssim/real"]) < 0.1
    assert collapse_flag(0.45, 0.3, margin=0.1) and not collapse_flag(0.45, 0.3, margin=0.2)


# ---- Inception network: FID self-distance, novelty, IS ----------------------------------------
@pytest.fixture(scope="module")
def real_stats(real32, module_cache):
    st = real_statistics(real32.key, (32, 32), lambda: real32.images, name=real32.name, batch_size=16)
    # the cached features are exactly the network's output on these images
    # (to float32 rounding: batch size and thread count change the order of CPU summations)
    np.testing.assert_allclose(st.features[:3], inception_features(real32.images[:3]), rtol=1e-4, atol=1e-5)
    return st


@pytest.fixture(scope="module")
def real_features(real_stats):
    return real_stats.features


def test_fid_of_a_set_against_itself_is_zero(real32, real_features):
    assert real_features.shape == (32, 2048) and real_features.dtype == np.float32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fidmod.SmallSampleWarning)
        same = fidmod.fid_from_features(real_features, real_features)
        other = fidmod.fid_from_features(real_features[:16], real_features[16:])
    assert abs(same) < 1e-3 * other
    assert other > 10


def test_novelty_finds_copies_and_indexes(real32, real_features):
    rng = np.random.default_rng(0)
    # copies of training images -> memorised, with the right nearest index
    copies = novelty(real_features[[3, 7, 11]] * 1.0001, real_features, files=real32.files)
    assert list(copies.index) == [3, 7, 11]
    assert copies.files == ["4.png", "8.png", "12.png"]
    assert copies.memorisation == 1.0 and (copies.distance < 1e-6).all()
    # held-out real images (the other half) are not copies of the first half
    held = novelty(real_features[16:], real_features[:16])
    assert held.memorisation <= 0.25
    assert held.threshold > 0 and len(held.real_nn_distance) == 16
    noise = novelty(rng.random((8, 2048)).astype(np.float32), real_features)
    assert noise.memorisation == 0.0


def test_find_nearest_training_images_end_to_end(real32, real_stats, monkeypatch):
    monkeypatch.setenv("POKELAB_CACHE", str(real_stats.path.parents[1]))
    res = find_nearest_training_images(real32.images[[2, 9]], real32, batch_size=16)
    assert list(res.index) == [2, 9] and res.files == ["3.png", "10.png"]
    assert res.memorisation == 1.0


def test_inception_score_refused_with_zeroed_classifier(real32):
    with pytest.raises(MetricUnavailable, match="all zeros"):
        inception_score(real32.images[:4])
    calls = []

    def sample_fn(k, s):
        calls.append(k)
        return torch.zeros(k, 3, 32, 32)

    with pytest.raises(MetricUnavailable, match="Inception Score unavailable"):
        evaluate_generator(sample_fn, real32, n=4, metrics=("fid", "is"))
    assert calls == []  # refused before any sampling


def test_inception_score_math():
    assert inception_score_from_probs(np.full((20, 10), 0.1), splits=2) == pytest.approx((1.0, 0.0))
    onehot = np.eye(5)[np.arange(50) % 5]
    mean, std = inception_score_from_probs(onehot, splits=5)
    assert mean == pytest.approx(5.0) and std == pytest.approx(0.0, abs=1e-12)


# ---- the statistics cache ------------------------------------------------------------------------
def _counting_features(monkeypatch):
    calls = []

    def fake_features(images, device=None, batch_size=50, progress=False, **kw):
        calls.append(len(images))
        x = images.reshape(len(images), -1).double()
        proj = torch.randn(x.shape[1], 2048, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        return (x @ proj / x.shape[1]).float().numpy()

    monkeypatch.setattr(fidmod, "inception_features", fake_features)
    return calls


def test_cache_key_changes_when_an_image_changes(fresh_cache, monkeypatch):
    calls = _counting_features(monkeypatch)
    imgs = torch.randint(0, 256, (6, 3, 16, 16), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    changed = imgs.clone()
    changed[4, 1, 7, 7] ^= 1
    assert content_key(imgs) == content_key(imgs.clone())
    assert content_key(changed) != content_key(imgs)
    assert stats_key(content_key(imgs), (16, 16)) != stats_key(content_key(imgs), (32, 32))
    a = real_statistics(content_key(imgs), (16, 16), lambda: imgs)
    b = real_statistics(content_key(changed), (16, 16), lambda: changed)
    assert a.key != b.key and calls == [6, 6]
    assert len(list(fresh_cache.glob("*.npz"))) == 2
    # a new process (empty memory cache) reads the file instead of recomputing
    fidmod.clear_memory_cache()
    again = real_statistics(content_key(imgs), (16, 16), lambda: pytest.fail("should come from the cache"))
    assert calls == [6, 6]
    np.testing.assert_array_equal(again.sigma, a.sigma)
    np.testing.assert_array_equal(again.features, a.features)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "wrong_shape"])
def test_corrupt_stats_cache_is_rebuilt(fresh_cache, monkeypatch, damage):
    calls = _counting_features(monkeypatch)
    imgs = torch.randint(0, 256, (5, 3, 8, 8), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    key = content_key(imgs)
    first = real_statistics(key, (8, 8), lambda: imgs)
    path = first.path
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(bytes(raw[: len(raw) // 2]))
    elif damage == "flip":
        raw[len(raw) // 2] ^= 0xFF  # inside the covariance data, zip structure intact
        path.write_bytes(bytes(raw))
    elif damage == "garbage":
        path.write_bytes(b"not an npz at all")
    else:
        np.savez(path, mu=np.zeros(3), sigma=np.zeros((3, 3)), features=np.zeros((2, 3)),
                 checksum=np.array("x"), meta=np.array("{}"))
    fidmod.clear_memory_cache()
    with pytest.warns(RuntimeWarning, match="corrupt"):
        rebuilt = real_statistics(key, (8, 8), lambda: imgs)
    assert calls == [5, 5]
    np.testing.assert_allclose(rebuilt.mu, first.mu)
    # and the rebuilt file is valid again
    fidmod.clear_memory_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        real_statistics(key, (8, 8), lambda: pytest.fail("cache should be valid again"))


# ---- LPIPS --------------------------------------------------------------------------------------
def test_lpips_paired_and_diversity(real32):
    from engines.metrics.perceptual import lpips_distance, lpips_diversity

    x = real32.images[:6]
    same = lpips_distance(x, x)
    diff = lpips_distance(x, x.flip(0))
    assert same.shape == (6,) and np.allclose(same, 0, atol=1e-6)
    assert (diff > 0.05).all()
    collapsed = real32.images[[0] * 6]
    assert lpips_diversity(collapsed, pairs=15) == pytest.approx(0.0, abs=1e-6)
    assert lpips_diversity(real32.images[:12], pairs=20) > 0.1
    with pytest.raises(MetricUnavailable, match="at least 31 px"):
        lpips_distance(x[:, :, :16, :16], x[:, :, :16, :16])


# ---- evaluate_generator end to end ----------------------------------------------------------------
def test_evaluate_generator_returns_finite_keys(real32, real_stats, monkeypatch):
    monkeypatch.setenv("POKELAB_CACHE", str(real_stats.path.parents[1]))
    monkeypatch.setattr(fidmod, "inception_features", lambda *a, **k: pytest.fail("real stats not from the cache"))
    seeds = []

    def sample_fn(k, seed):
        seeds.append((k, seed))
        g = torch.Generator().manual_seed(seed)
        base = real32.images[torch.randint(0, 32, (k,), generator=g)].float() / 127.5 - 1
        return (base + 0.3 * torch.randn(base.shape, generator=g)).clamp(-1, 1)

    metrics = ("fid", "kid", "ms_ssim", "lpips", "novelty")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fidmod.SmallSampleWarning)
        res = evaluate_generator(sample_fn, real32, n=12, metrics=metrics, batch_size=8, seed=3)
        assert [k for k, _ in seeds] == [8, 4] and len({s for _, s in seeds}) == 2
        want = {"fid", "fid_lo", "fid_hi", "kid", "kid_std", "kid_lo", "kid_hi", "ms_ssim/fake", "ms_ssim/real",
                "collapse", "lpips/diversity", "memorisation", "novelty/median_distance", "eval_n", "eval_seconds"}
        assert set(res) == want
        assert all(math.isfinite(v) for v in res.values())
        assert res["eval_n"] == 12 and res["fid"] > 0 and res["collapse"] in (0.0, 1.0)
        assert res["fid_lo"] < res["fid"] < res["fid_hi"] and res["kid_lo"] < res["kid"] < res["kid_hi"]
        # same seed -> same numbers (stats now from the cache)
        again = evaluate_generator(sample_fn, real32, n=12, metrics=("fid", "kid"), batch_size=8, seed=3)
    assert again["fid"] == pytest.approx(res["fid"], rel=1e-9)
    assert again["kid"] == pytest.approx(res["kid"], rel=1e-9)


def test_evaluate_rejects_bad_generators_and_metrics(real32):
    with pytest.raises(ValueError, match="unknown metric 'fod'"):
        evaluate_generator(lambda k, s: torch.zeros(k, 3, 32, 32), real32, n=4, metrics="fod")
    with pytest.raises(ValueError, match=r"must return a \[4, C, H, W\]"):
        evaluate_generator(lambda k, s: torch.zeros(2, 3, 32, 32), real32, n=4, metrics="ms_ssim", batch_size=4)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_generator(lambda k, s: torch.full((k, 3, 32, 32), float("nan")), real32, n=4, metrics="ms_ssim")
    with pytest.raises(ValueError, match="at least 2"):
        evaluate_generator(lambda k, s: torch.zeros(k, 3, 32, 32), real32, n=1)
    calls = []

    def tiny(k, s):
        calls.append(k)
        return torch.zeros(k, 3, 16, 16)

    with pytest.raises(MetricUnavailable, match="at least 31 px"):  # refused at the first batch
        evaluate_generator(tiny, real32, n=40, metrics="lpips", batch_size=8)
    assert calls == [8]
