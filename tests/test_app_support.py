"""Helpers shared by the app tests (no tests here): tiny exports, a tiny training set on disk, a tiny
randomly initialised Stable Diffusion pipeline saved as a diffusers folder, and a launched app."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import torch
from PIL import Image

WORDS = ["a", "cute", "red", "blue", "fire", "water", "dragon", "turtle", "pokemon", "with", "wings", "tiny"]


def write_image_folder(folder: Path, n: int = 8, size: int = 32, seed: int = 0) -> Path:
    """``n`` distinct PNGs (smooth colour blobs) named 1.png .. n.png."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.35)
        col = rng.integers(0, 256, 3)
        mask = ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r)[..., None]
        img = np.where(mask, col, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i + 1}.png")
    return folder


def make_export(out: Path, engine: str = "dcgan", size: int = 32, width: int = 8, seed: int = 0,
                dataset_dir: Path | None = None, epochs: int = 3) -> Path:
    """A randomly initialised export (with a ``trained`` record naming ``dataset_dir``)."""
    from engines.runs.export import save_export
    from engines.registry import get_engine

    torch.manual_seed(seed)
    if engine == "stylegan2_ada":
        cfg = {"z_dim": 16, "w_dim": 16, "mapping_layers": 2, "channel_base": 256, "channel_max": 32}
    else:
        cfg = {"g_width": width, "d_width": width}
        if engine == "dcgan":
            cfg["z_dim"] = 16
    eng = get_engine(engine)(cfg, size, training=False)
    if engine != "stylegan2_ada":
        # a fresh DCGAN-style init gives nearly flat grey images; a louder last layer gives them contrast
        convs = [p for m in eng.export_modules().values() for p in m.parameters() if p.dim() == 4]
        with torch.no_grad():
            convs[-1].mul_(60)
    trained = {"run_id": f"test-{engine}-{seed}", "epochs": epochs, "steps": epochs * 5, "batch_size": 8,
               "image_size": size, "device": "cpu"}
    if dataset_dir is not None:
        trained["dataset"] = {"name": dataset_dir.name, "key": "test", "count": 8, "size": size,
                              "source": str(dataset_dir), "background": "white"}
    return save_export(eng, out, trained=trained)


def build_tiny_sd(folder: Path, scheduler: str = "ddim") -> Path:
    """A tiny random Stable Diffusion pipeline (UNet with cross-attention, VAE, CLIP text encoder and a
    CLIP tokenizer built from a word list), saved with save_pretrained: nothing is downloaded."""
    from diffusers import (AutoencoderKL, DDIMScheduler, PNDMScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    tok_dir = folder.parent / (folder.name + "-tok")
    tok_dir.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}

    def add(t):
        vocab.setdefault(t, len(vocab))

    add("<|startoftext|>")
    add("<|endoftext|>")
    for c in "abcdefghijklmnopqrstuvwxyz":
        add(c)
        add(c + "</w>")
    merges = []
    for w in WORDS:  # merge each word left to right into one token, the last piece carrying </w>
        pieces = list(w[:-1]) + [w[-1] + "</w>"]
        cur = pieces[0]
        for nxt in pieces[1:]:
            merges.append(f"{cur} {nxt}")
            cur = cur + nxt
            add(cur)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=32)

    text = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=16,
                                        intermediate_size=32, num_attention_heads=2, num_hidden_layers=2,
                                        vocab_size=len(vocab), max_position_embeddings=32))
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=8, norm_num_groups=8)
    vae = AutoencoderKL(block_out_channels=(8, 8, 16), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        norm_num_groups=8, sample_size=64, layers_per_block=1)
    sched_cls = DDIMScheduler if scheduler == "ddim" else PNDMScheduler
    sched = sched_cls(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                      set_alpha_to_one=False, steps_offset=1) if scheduler == "ddim" else sched_cls(skip_prk_steps=True)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningApp:
    """The app launched in this process (prevent_thread_lock) on a free port, with a client."""

    def __init__(self, argv: list[str]):
        from app.main import create_app

        self.port = free_port()
        self.app = create_app(argv + ["--host", "127.0.0.1", "--port", str(self.port)])
        self.app.launch(prevent_thread_lock=True, quiet=True)
        self.url = f"http://127.0.0.1:{self.port}/"
        self._client = None

    @property
    def client(self):
        if self._client is None:
            from gradio_client import Client

            self._client = Client(self.url, verbose=False)
        return self._client

    def new_client(self):
        from gradio_client import Client

        return Client(self.url, verbose=False)

    def close(self):
        self.app.close()
