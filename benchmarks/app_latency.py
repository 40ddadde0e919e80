"""Latency of the Gradio app through gradio_client, on CPU.

    python benchmarks/app_latency.py [--export PATH] [--translate-export PATH] [--rounds 40] [--clients 8]

Starts ``python -m app`` in a subprocess (CPU, the export given, or the shipped DCGAN export, or a
default-width DCGAN at 64 px built here with random weights: sampling cost does not depend on training),
then measures from the client side what a page costs: the gradio_client call, then every file
the result points to fetched over one keep-alive connection (as a browser does):

- a 16-image grid (``/generate``: 16 PNGs + the grid PNG), a 24-frame interpolation (``/interpolate``:
  strip + GIF), one review round trip (``/review_answer``: two answers stored, the next pair drawn), each
  ``--rounds`` times in a row; also the bare API call, and gradio_client's own file download (which opens
  a new connection per file and so measures the client more than the app);
- one translated picture (``/translate``: the upload, the call, then the engine input, output,
  reconstruction and download PNG) with a translation export at its own size (``--translate-export``, else
  the first translation export in checkpoints/, else a default-width CycleGAN at 64 px built here);
- the same page calls from ``--clients`` clients at once (one thread, one client each), counting failures.

Prints median and p95 per row. Target: 16-image grid p95 < 300 ms, no failure under load.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def shipped_dcgan() -> Path | None:
    from engines.runs.export import read_export_config

    ck = ROOT / "checkpoints"
    if not ck.is_dir():
        return None
    cands = [p for p in sorted(ck.iterdir()) if p.is_dir() and p.name != "runs"]
    runs = ck / "runs"
    if runs.is_dir():
        cands += [p / "export" for p in sorted(runs.iterdir())]
    for c in cands:
        try:
            if read_export_config(c)["engine"] == "dcgan":
                return c
        except Exception:  # noqa: BLE001 - not an export
            continue
    return None


def shipped_translation() -> Path | None:
    """The first translation export in checkpoints/ (a run's export/ included)."""
    from engines.runs.export import read_export_config

    ck = ROOT / "checkpoints"
    if not ck.is_dir():
        return None
    cands = [p for p in sorted(ck.iterdir()) if p.is_dir() and p.name != "runs"]
    if (ck / "runs").is_dir():
        cands += [p / "export" for p in sorted((ck / "runs").iterdir())]
    for c in cands:
        try:
            if read_export_config(c).get("kind") == "translate":
                return c
        except Exception:  # noqa: BLE001 - not an export (yet)
            continue
    return None


def build_cyclegan(out: Path, seed: int = 0) -> Path:
    import torch

    from engines.runs.export import save_export
    from engines.registry import get_engine

    torch.manual_seed(seed)
    eng = get_engine("cyclegan")({}, 64, training=False)  # default widths (ngf 64, 6 residual blocks)
    return save_export(eng, out, trained={"run_id": f"bench-random-cyclegan-{seed}", "epochs": 0})


def test_picture(out: Path) -> Path:
    """A Pokémon sprite from the shared data when present, else a 96 px synthetic picture with alpha."""
    sprite = ROOT.parent / "shared" / "datasets" / "pokemon" / "bw-sprites-96" / "25.png"
    if sprite.is_file():
        return sprite
    from PIL import Image, ImageDraw

    im = Image.new("RGBA", (96, 96), (0, 0, 0, 0))
    ImageDraw.Draw(im).ellipse((20, 14, 76, 86), fill=(240, 200, 40, 255), outline=(20, 20, 20, 255), width=3)
    im.save(out)
    return out


def build_dcgan(out: Path, seed: int = 0) -> Path:
    import torch

    from engines.runs.export import save_export
    from engines.registry import get_engine

    torch.manual_seed(seed)
    eng = get_engine("dcgan")({}, 64, training=False)  # default widths (g_width 64, z 100)
    return save_export(eng, out, trained={"run_id": f"bench-random-{seed}", "epochs": 0})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(port: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"the app exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("the app did not start in time")


def stats(ms: list[float]) -> str:
    if not ms:
        return "n/a"
    return f"median {statistics.median(ms):7.1f} ms   p95 {np.percentile(ms, 95):7.1f} ms   (n={len(ms)})"


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--export", help="export or run folder (default: the shipped DCGAN, else a random 64 px DCGAN)")
    ap.add_argument("--translate-export", help="translation export or run folder (default: the first in "
                                               "checkpoints/, else a random default-width CycleGAN at 64 px)")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--per-client", type=int, default=10, help="requests per client under concurrent load")
    ap.add_argument("--concurrency", type=int, default=4, help="the app's default_concurrency_limit")
    args = ap.parse_args()

    from gradio_client import Client

    tmp = Path(tempfile.mkdtemp(prefix="pokelab-bench-"))
    export = Path(args.export) if args.export else shipped_dcgan()
    what = f"{export}" if export else "random default-width DCGAN at 64 px (built here)"
    exports = [export] if export else [build_dcgan(tmp / "dcgan-64")]
    # review needs two sources: the export's training set when it is on disk, else a second export
    exports.append(build_dcgan(tmp / "dcgan-64-b", seed=1))
    t_export = Path(args.translate_export) if args.translate_export else shipped_translation()
    t_what = f"{t_export}" if t_export else "random default-width CycleGAN at 64 px (built here)"
    t_export = t_export or build_cyclegan(tmp / "cyclegan-64")
    exports.append(t_export)
    picture = test_picture(tmp / "picture.png")
    port = free_port()
    env = dict(os.environ, TORCH_HOME=os.environ.get("TORCH_HOME", str(ROOT.parent / "shared" / "torch-home")))
    cmd = [sys.executable, "-m", "app", "--no-shipped", "--port", str(port), "--device", "cpu",
           "--review-db", str(tmp / "review.sqlite"), "--concurrency", str(args.concurrency),
           "--sd-model", str(tmp / "no-sd"), "--checkpoints", *map(str, exports)]
    log = open(tmp / "app.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_up(port, proc)
        url = f"http://127.0.0.1:{port}/"
        c = Client(url, verbose=False)
        listed = c.predict(api_name="/exports")
        info = next(e for e in listed if e["kind"] == "generate")
        t_info = next(e for e in listed if e["kind"] == "translate")
        key, t_key = info["key"], t_info["key"]
        print(f"app latency benchmark — export {key} ({info['engine']}, {info['image_size']} px): {what}")
        print(f"translation export {t_key} ({t_info['engine']}, {t_info['image_size']} px): {t_what}; "
              f"picture {picture}")
        print(f"CPU threads available: {os.cpu_count()}, load average now: {os.getloadavg()[0]:.1f}")

        def fetch_all(result, http) -> None:
            """GET every file a result points to on one keep-alive connection, as a browser does."""
            stack = [result]
            while stack:
                x = stack.pop()
                if isinstance(x, dict) and isinstance(x.get("url"), str):
                    http.get(x["url"]).raise_for_status()
                elif isinstance(x, dict):
                    stack.extend(x.values())
                elif isinstance(x, (list, tuple)):
                    stack.extend(x)

        def page_call(cl, http, *a, api_name):
            fetch_all(cl.predict(*a, api_name=api_name), http)

        gen = lambda cl, http, s=0: page_call(cl, http, key, s, 16, 0.7, False, api_name="/generate")  # noqa: E731
        interp = lambda cl, http, s=0: page_call(cl, http, key, s, s + 1, 24, "slerp", 0.7, 12, False,  # noqa: E731
                                                 False, api_name="/interpolate")
        answer = lambda cl, http, s=0: page_call(cl, http, "Left", "Tie", "Tie", api_name="/review_answer")  # noqa: E731
        from gradio_client import handle_file

        translate = lambda cl, http, s=0: page_call(cl, http, handle_file(str(picture)), t_key, "AB", False,  # noqa: E731
                                                    "u2net", api_name="/translate")

        nd = Client(url, verbose=False, download_files=False)   # results as URLs; files fetched by fetch_all
        http = httpx.Client()
        for _ in range(3):  # warm-up: load the export, first PNG encodes, the real set for review
            gen(nd, http)
            interp(nd, http)
            translate(nd, http)
        nd.predict("bench", api_name="/review_start")
        answer(nd, http)

        rows = []
        for name, fn in (("generate 16 images", gen), ("interpolate 24 frames", interp),
                         ("review round trip", answer), (f"translate 1 picture at {t_info['image_size']} px", translate)):
            ms = [timed(lambda i=i: fn(nd, http, i)) for i in range(args.rounds)]
            rows.append((f"{name}, 1 client", ms, 0))
        ms = [timed(lambda i=i: nd.predict(key, i, 16, 0.7, False, api_name="/generate")) for i in range(args.rounds)]
        rows.append(("generate 16 images, API call only (no file fetch)", ms, 0))
        # gradio_client's own download opens a new connection per file (17 here): slower than any browser
        ms = [timed(lambda i=i: c.predict(key, i, 16, 0.7, False, api_name="/generate")) for i in range(args.rounds)]
        rows.append(("generate 16 images, gradio_client downloading files", ms, 0))

        def load_test(name, fn, needs_review=False):
            results: list[float] = []
            failures: list[str] = []
            lock = threading.Lock()
            clients = [(Client(url, verbose=False, download_files=False), httpx.Client())
                       for _ in range(args.clients)]
            if needs_review:
                for i, (cl, _) in enumerate(clients):
                    cl.predict(f"rater{i}", api_name="/review_start")
            barrier = threading.Barrier(args.clients)

            def work(cl, hc, idx):
                barrier.wait()
                for j in range(args.per_client):
                    t0 = time.perf_counter()
                    try:
                        fn(cl, hc, idx * 1000 + j)
                        with lock:
                            results.append((time.perf_counter() - t0) * 1000)
                    except Exception as e:  # noqa: BLE001 - counted and reported
                        with lock:
                            failures.append(f"{type(e).__name__}: {e}")

            threads = [threading.Thread(target=work, args=(cl, hc, i)) for i, (cl, hc) in enumerate(clients)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            for _, hc in clients:
                hc.close()
            rows.append((f"{name}, {args.clients} clients at once", results, len(failures)))
            print(f"  {name}: {len(results)} ok, {len(failures)} failed, {len(results) / wall:.1f} requests/s"
                  + (f" — first failure: {failures[0]}" if failures else ""))

        print("under load:")
        load_test("generate 16 images", gen)
        load_test("interpolate 24 frames", interp)
        load_test("review round trip", answer, needs_review=True)
        load_test(f"translate 1 picture at {t_info['image_size']} px", translate)

        # the model alone (no HTTP, gradio or PNG), in a worker thread like the server's handlers
        import torch

        from engines.runs.export import load_export
        eng = load_export(exports[0])
        ms = []

        def sample_only():
            with torch.inference_mode():
                eng.sample(n=16, seed=0)
                ms.extend(timed(lambda i=i: eng.sample(z=torch.cat([eng.latent(1, i * 16 + k) for k in range(16)])))
                          for i in range(args.rounds))

        t = threading.Thread(target=sample_only)
        t.start()
        t.join()
        rows.append(("sampling 16 images alone (no server)", ms, 0))

        # the translation alone: the picture prepared as the app does it, then output + reconstruction
        from app import translate as app_translate

        t_eng = load_export(t_export)
        t_ms: list[float] = []

        def translate_only():
            pic, _ = app_translate.prepare_upload(picture, t_eng.image_size)
            app_translate.translate_picture(t_eng, pic, "AB")
            t_ms.extend(timed(lambda: app_translate.translate_picture(t_eng, pic, "AB")) for _ in range(args.rounds))

        t = threading.Thread(target=translate_only)
        t.start()
        t.join()
        rows.append(("translating 1 picture alone, output + reconstruction (no server)", t_ms, 0))
        http.close()

        print(f"load average after: {os.getloadavg()[0]:.1f}")
        print()
        w = max(len(r[0]) for r in rows)
        for name, ms, fails in rows:
            print(f"{name:<{w}}   {stats(ms)}" + (f"   FAILED {fails}" if fails else ""))
        p95 = float(np.percentile(rows[0][1], 95))
        total_fail = sum(r[2] for r in rows)
        print(f"\ntarget: 16-image grid (call + its files) p95 < 300 ms -> {p95:.0f} ms "
              f"({'met' if p95 < 300 else 'NOT met'}); "
              f"failed requests under load: {total_fail}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


if __name__ == "__main__":
    main()
