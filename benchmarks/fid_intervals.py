"""Do FID's intervals and FID∞ say the truth? A check on Gaussians with a known Fréchet distance.

    python benchmarks/fid_intervals.py                 # d = 2048 (pool3's size), n = 500 and 2000
    python benchmarks/fid_intervals.py --d 64 --draws 30 --heavy

Real features: 649 draws (the Pokémon set's size) from N(mu_r, S_r); generated: n draws from N(mu_g, S_g), both
with a pool3-like spectrum (eigenvalues ~ (1 + i / 30)^-1.5). --heavy scales each draw by a chi(4) factor
(heavier tails, as real features have). Printed per n:
  spread        the std of FID over --draws independent generated sets (what an interval should describe)
  bootstrap     the std of FID over resamples with replacement of one set (the plain bootstrap)
  halves        the std over random halves without replacement (the delete-half jackknife: engines.metrics.small_n)
  FID, FID∞     their mean over the draws, beside the truth (the Fréchet distance of N(mu_g, S_g) to the real
                statistics) and FID∞ with the line started at n/10 (the reference's proportion) instead of n/2
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.metrics.fid import RealStats, feature_statistics, frechet_distance  # noqa: E402
from engines.metrics.small_n import WeightedFID, fid_infinity, half_samples  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--n", type=int, nargs="+", default=[500, 2000])
    ap.add_argument("--draws", type=int, default=15, help="independent generated sets per n")
    ap.add_argument("--replicates", type=int, default=100)
    ap.add_argument("--heavy", action="store_true", help="heavier-tailed features")
    ap.add_argument("--seed", type=int, default=2)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    d = args.d
    u, _ = np.linalg.qr(rng.standard_normal((d, d)))
    spec = 1.0 / (1 + np.arange(d) / (30.0 * d / 2048)) ** 1.5
    lg, lr = u * np.sqrt(spec), u * np.sqrt(spec * (1 + 0.3 * rng.random(d)))
    mu_g = rng.random(d) * 0.5
    mu_r = mu_g + 0.05 * rng.standard_normal(d)

    def draw(n, lmat, mu):
        z = rng.standard_normal((n, d))
        if args.heavy:
            z *= np.sqrt(rng.chisquare(4, size=(n, 1)) / 4)
        return mu + z @ lmat.T

    real = draw(649, lr, mu_r)
    st = RealStats(*feature_statistics(real), real.astype(np.float32), "gauss")
    sigma_g = lg @ lg.T  # the chi(4)/4 scale of --heavy has mean 1: the covariance stays
    truth = frechet_distance(st.mu, st.sigma, mu_g, sigma_g)
    print(f"d={d}, 649 real, truth (Fréchet distance of the generating Gaussian to the real statistics) "
          f"{truth:.3f}{', heavy tails' if args.heavy else ''}\n")
    print(f"{'n':>6} {'spread':>8} {'bootstrap':>10} {'halves':>8} {'FID':>9} {'FID∞ n/2':>9} {'FID∞ n/10':>10} "
          f"{'s/interval':>10}")
    for n in args.n:
        fids, infs, infs10 = [], [], []
        for k in range(args.draws):
            wf = WeightedFID(draw(n, lg, mu_g), st)
            fids.append(wf(np.ones(n)))
            infs.append(fid_infinity(None, st, seed=k, weighted=wf).value)
            infs10.append(fid_infinity(None, st, first=n // 10, seed=k, weighted=wf).value)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=args.replicates)
        boot = [wf(w) for w in counts]
        t0 = time.perf_counter()
        halves = [wf(w) for w in half_samples(n, args.replicates, 0)]
        sec = time.perf_counter() - t0
        print(f"{n:>6} {np.std(fids, ddof=1):>8.4f} {np.std(boot, ddof=1):>10.4f} {np.std(halves, ddof=1):>8.4f} "
              f"{np.mean(fids):>9.3f} {np.mean(infs):>9.3f} {np.mean(infs10):>10.3f} {sec:>10.1f}")
    print("\nspread: std over independent draws; bootstrap / halves: std over one draw's resamples (the last one); an "
          "interval is FID +- 1.96 x the halves' std.")


if __name__ == "__main__":
    main()
