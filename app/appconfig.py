"""The app's settings: command-line flags, environment variables, and the bounds on every input.

Precedence: a flag beats its environment variable, which beats the default. Kept free of gradio and
torch imports so ``python -m app --help`` answers at once.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from engines import review

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SD_MODEL = "lambdalabs/sd-pokemon-diffusers"
DEFAULT_REVIEW_DB = REPO_ROOT / review.DEFAULT_PATH  # the studio reads the same file


@dataclass(frozen=True)
class Limits:
    """Every input the UI or the API accepts is checked against these (the sliders use them too)."""
    max_seed: int = 2**32 - 1
    min_count: int = 1
    max_count: int = 64
    min_frames: int = 2
    max_frames: int = 60
    min_fps: float = 1.0
    max_fps: float = 30.0
    min_psi: float = 0.0
    max_psi: float = 1.0
    # text-to-image
    max_prompt_chars: int = 400
    min_steps: int = 1
    max_steps: int = 100
    min_guidance: float = 0.0
    max_guidance: float = 20.0
    min_sd_size: int = 64
    max_sd_size: int = 768
    sd_size_step: int = 64
    min_sd_frames: int = 2
    max_sd_frames: int = 16
    max_rater_chars: int = 60
    # image-to-image translation: one uploaded picture (checked before it is decoded)
    max_upload_bytes: int = 25 * 1024 * 1024
    max_upload_pixels: int = 36_000_000   # 6000 x 6000; a bigger header is refused (decompression bombs)


LIMITS = Limits()


def _env_list(name: str) -> list[str]:
    raw = os.environ.get(name, "")
    return [p for p in raw.split(os.pathsep) if p.strip()]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass
class AppConfig:
    checkpoints: list[Path] = field(default_factory=list)  # export folders, run folders or folders of them
    shipped: bool = True            # also scan the repository's checkpoints/
    data: list[Path] = field(default_factory=list)  # where to look for training sets named in exports
    review_db: Path = DEFAULT_REVIEW_DB
    sd_model: str = DEFAULT_SD_MODEL
    sd_in_review: bool = False      # SD samples as a review source (slow on CPU: one image per round)
    device: str = "cpu"
    host: str = "127.0.0.1"
    port: int = 7860
    concurrency: int = 4
    max_queue: int = 64
    novelty: bool = True            # offer nearest-training-image lookups when the metrics can run
    rembg_model_path: Path | None = None  # a local U2Net-style ONNX file offered for background removal
    share: bool = False

    def checkpoint_roots(self) -> list[Path]:
        roots = list(self.checkpoints)
        if self.shipped:
            roots.append(REPO_ROOT / "checkpoints")
        out: list[Path] = []
        for r in roots:
            r = Path(r).expanduser()
            if r not in out:
                out.append(r)
        return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m app",
        description="pokelab's Gradio app: generate, interpolate, translate pictures, text-to-image with "
                    "attention maps, blind review.",
    )
    p.add_argument("--checkpoints", nargs="+", metavar="DIR", default=None,
                   help="export folders, run folders, or folders holding them (added to the shipped "
                        "checkpoints/); env POKELAB_CHECKPOINTS, separated by the OS path separator")
    p.add_argument("--no-shipped", action="store_true",
                   help="do not scan the repository's checkpoints/ (env POKELAB_NO_SHIPPED=1)")
    p.add_argument("--data", nargs="+", metavar="DIR", default=None,
                   help="folders where training sets named in the exports may be found when their recorded "
                        "path does not exist here (novelty, real images in review); env POKELAB_DATA")
    p.add_argument("--review-db", metavar="PATH", default=None,
                   help=f"SQLite file for blind-review answers (env POKELAB_REVIEW_DB; default {DEFAULT_REVIEW_DB})")
    p.add_argument("--sd-model", metavar="ID_OR_PATH", default=None,
                   help=f"Stable Diffusion model id or local folder (env POKELAB_SD_MODEL; default {DEFAULT_SD_MODEL})")
    p.add_argument("--sd-in-review", action="store_true",
                   help="use Stable Diffusion samples as a review source once the model is loaded "
                        "(env POKELAB_SD_IN_REVIEW=1)")
    p.add_argument("--device", default=None, help="cpu (default), cuda, cuda:N or auto (env POKELAB_DEVICE)")
    p.add_argument("--host", default=None,
                   help="interface to bind (env POKELAB_HOST or GRADIO_SERVER_NAME; default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (env POKELAB_PORT or GRADIO_SERVER_PORT; default 7860)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="requests processed at once per event (env POKELAB_CONCURRENCY; default 4)")
    p.add_argument("--rembg-model-path", metavar="FILE.onnx", default=None,
                   help="a local U2Net-style ONNX model offered for background removal in the Translate tab "
                        "(no download; env POKELAB_REMBG_MODEL_PATH)")
    p.add_argument("--no-novelty", action="store_true", help="hide the nearest-training-image lookup")
    p.add_argument("--share", action="store_true", help="ask Gradio for a public share link")
    return p


def config_from_args(argv: list[str] | None = None) -> AppConfig:
    a = build_parser().parse_args(argv)
    env = os.environ
    checkpoints = a.checkpoints if a.checkpoints is not None else _env_list("POKELAB_CHECKPOINTS")
    data = a.data if a.data is not None else _env_list("POKELAB_DATA")
    port = a.port if a.port is not None else int(env.get("POKELAB_PORT") or env.get("GRADIO_SERVER_PORT") or 7860)
    concurrency = a.concurrency if a.concurrency is not None else int(env.get("POKELAB_CONCURRENCY") or 4)
    if not 0 <= port <= 65535:
        raise SystemExit(f"--port must be between 0 and 65535, not {port}")
    if concurrency < 1:
        raise SystemExit("--concurrency must be at least 1")
    rembg_file = a.rembg_model_path or env.get("POKELAB_REMBG_MODEL_PATH")
    return AppConfig(
        checkpoints=[Path(c) for c in checkpoints],
        shipped=not (a.no_shipped or _env_flag("POKELAB_NO_SHIPPED")),
        data=[Path(d) for d in data],
        review_db=Path(a.review_db or env.get("POKELAB_REVIEW_DB") or DEFAULT_REVIEW_DB),
        sd_model=a.sd_model or env.get("POKELAB_SD_MODEL") or DEFAULT_SD_MODEL,
        sd_in_review=a.sd_in_review or _env_flag("POKELAB_SD_IN_REVIEW"),
        device=a.device or env.get("POKELAB_DEVICE") or "cpu",
        host=a.host or env.get("POKELAB_HOST") or env.get("GRADIO_SERVER_NAME") or "127.0.0.1",
        port=port,
        concurrency=concurrency,
        novelty=not a.no_novelty,
        rembg_model_path=Path(rembg_file) if rembg_file else None,
        share=a.share,
    )
