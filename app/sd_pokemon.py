"""Text-to-image with a Stable Diffusion Pokémon fine-tune (diffusers), cross-attention maps per prompt
token, and latent interpolation. No UI code: the app and the tests call this module.

- The pipeline is loaded lazily, once, from a Hub id or a local folder through
  ``StableDiffusionPipeline.from_pretrained``. When that fails (offline and not cached, a wrong id, a
  broken folder) ``SDUnavailable`` carries a sentence for the user and the failure is remembered for a
  minute, so a page full of clicks does not hammer the network.
- Attention maps: ``AttentionStore`` (a diffusers ``AttnProcessor``) replaces the UNet's processors for
  one run. In cross-attention layers with at most ``max_query`` spatial positions (the 32x32, 16x16 and
  8x8 layers of a 512 px image) it computes the softmaxed probabilities itself, keeps the conditional
  half of the classifier-free-guidance batch, averages over heads and adds them to a per-resolution sum
  over layers and steps; every other attention call goes to the fast default processor. Per prompt
  token, the sums are brought to the largest recorded resolution, averaged over all recorded layer
  calls and upsampled to the image.
- Initial noise comes from a CPU generator seeded per image (passed as ``latents=``): a seed gives the
  same picture on every device, and interpolation frames 0 and N-1 are exactly the two seeds' images.
"""
from __future__ import annotations

import logging
import math
import re
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .appconfig import LIMITS
from .inputs import AppInputError, as_choice, as_float, as_int, as_text

log = logging.getLogger("pokelab.app")

try:  # diffusers is an optional dependency of the app: without it the tab says so
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
except ImportError:  # pragma: no cover - exercised only without diffusers
    AttnProcessor = object
    AttnProcessor2_0 = None

StepCallback = Callable[[int, int], None]
RETRY_AFTER_S = 60.0
#: what the first use of a Hub model downloads (SD 1.x in fp32 with its text encoder and VAE)
SD_DOWNLOAD = "4 GB"


class SDUnavailable(RuntimeError):
    """The Stable Diffusion model cannot be used here; the message says why and what to do."""


@dataclass
class SDImage:
    image: Image.Image
    seed: int
    prompt: str
    tokens: list[str] = field(default_factory=list)       # the prompt's tokens (no start/end markers)
    maps: np.ndarray | None = None                         # [T, H, W] float32 >= 0, one per token
    truncated: bool = False                                # the prompt was longer than the text encoder takes


def _layer_hw(q: int, lh: int, lw: int) -> tuple[int, int] | None:
    """Spatial size of a UNet layer with ``q`` positions for a latent of lh x lw (stride-2 downsamplers
    give ceil(h/2) per level)."""
    h, w = lh, lw
    while h * w > q and (h > 1 or w > 1):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return (h, w) if h * w == q else None


class AttentionStore(AttnProcessor):
    """Records cross-attention probabilities (see the module docstring)."""

    def __init__(self, latent_hw: tuple[int, int], n_images: int = 1, max_query: int = 32 * 32):
        super().__init__()
        self.latent_hw = latent_hw
        self.n_images = n_images
        self.max_query = max_query
        self.sums: dict[tuple[int, int], torch.Tensor] = {}   # (h, w) -> [n, h*w, K] float32
        self.counts: dict[tuple[int, int], int] = {}
        self._fast = AttnProcessor2_0() if AttnProcessor2_0 is not None else None

    def _fallback(self, *args, **kwargs):
        if self._fast is not None:
            return self._fast(*args, **kwargs)
        return super().__call__(*args, **kwargs)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        hw = None
        if encoder_hidden_states is not None and hidden_states.ndim == 3 and attn.spatial_norm is None:
            q = hidden_states.shape[1]
            if q <= self.max_query:
                hw = _layer_hw(q, *self.latent_hw)
        if hw is None:  # self-attention, large layers, unknown shapes: the default computation
            return self._fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb)

        residual = hidden_states
        batch, seq_len, _ = encoder_hidden_states.shape
        attention_mask = attn.prepare_attention_mask(attention_mask, seq_len, batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(context))
        value = attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(query, key, attention_mask)    # [B*heads, q, K], softmaxed

        heads = probs.shape[0] // batch
        p = probs.detach().view(batch, heads, probs.shape[1], probs.shape[2])
        # with classifier-free guidance the batch is [unconditional, conditional]: keep the conditional half
        p = p[-self.n_images:].float().mean(dim=1)
        if hw in self.sums:
            self.sums[hw] += p
            self.counts[hw] += 1
        else:
            self.sums[hw] = p.clone()
            self.counts[hw] = 1

        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def token_maps(self, positions: list[int], size: tuple[int, int], image: int = 0) -> np.ndarray:
        """[T, H, W] float32: per token position, the mean attention over all recorded layer calls."""
        if not self.sums:
            raise RuntimeError("no cross-attention was recorded (does this UNet have cross-attention layers?)")
        target = max(self.sums, key=lambda hw: hw[0] * hw[1])
        total = None
        for (h, w), s in self.sums.items():
            m = s[image].reshape(h, w, -1).permute(2, 0, 1)[positions].unsqueeze(0).cpu()   # [1, T, h, w]
            if (h, w) != target:
                m = F.interpolate(m, size=target, mode="bilinear", align_corners=False)
            total = m if total is None else total + m
        total = total / sum(self.counts.values())
        out = F.interpolate(total, size=size, mode="bilinear", align_corners=False)[0]
        return out.clamp_min(0).numpy().astype(np.float32)


# ---- colour maps and overlays -----------------------------------------------------------------------
_HEAT = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
                  [245, 125, 21], [250, 193, 39], [252, 255, 164]], np.float32)


def heat_colours(m: np.ndarray) -> np.ndarray:
    """[H, W] values in [0, 1] -> [H, W, 3] uint8 on a dark-purple-to-yellow ramp."""
    x = np.clip(m, 0, 1) * (len(_HEAT) - 1)
    i = np.clip(np.floor(x).astype(int), 0, len(_HEAT) - 2)
    t = (x - i)[..., None]
    return (_HEAT[i] * (1 - t) + _HEAT[i + 1] * t).round().astype(np.uint8)


def overlay(image: Image.Image, m: np.ndarray, alpha: float = 0.55) -> Image.Image:
    """A token's map blended over the image, stretched to its own range (min -> dark, max -> bright) so
    each token shows where it attends most relative to the rest of the picture."""
    lo, hi = float(m.min()), float(m.max())
    m = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    base = np.asarray(image.convert("RGB"), np.float32)
    heat = heat_colours(m).astype(np.float32)
    if heat.shape[:2] != base.shape[:2]:
        heat = np.asarray(Image.fromarray(heat.astype(np.uint8)).resize(image.size, Image.Resampling.BILINEAR),
                          np.float32)
    return Image.fromarray((base * (1 - alpha) + heat * alpha).round().astype(np.uint8))


# ---- the pipeline ------------------------------------------------------------------------------------
def slerp_tensors(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    af, bf = a.flatten().double(), b.flatten().double()
    cos = torch.dot(af / af.norm(), bf / bf.norm()).clamp(-1 + 1e-7, 1 - 1e-7)
    omega = torch.acos(cos)
    if float(torch.sin(omega).abs()) < 1e-6:
        return a + (b - a) * t
    s = torch.sin(omega)
    out = (torch.sin((1 - t) * omega) / s) * af + (torch.sin(t * omega) / s) * bf
    return out.view_as(a).to(a.dtype)


def _pick_device_name(device: str) -> str:
    try:
        return _pick_device(device).type
    except (SDUnavailable, RuntimeError):
        return "cpu"


def _pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SDUnavailable("device 'cuda' was asked for but CUDA is not available")
    return dev


class SDPokemon:
    """One lazily loaded pipeline per process; runs are serialised (one image at a time uses the whole
    machine anyway, and the attention processors are per-run state)."""

    def __init__(self, model: str, device: str = "cpu", dtype: torch.dtype | None = None):
        self.model = str(model)
        self.device_name = device
        self.dtype = dtype
        self._pipe = None
        self._default_procs = None
        self._error: tuple[float, str] | None = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    # ---- loading ---------------------------------------------------------------------------
    def status(self) -> str:
        if self._pipe is not None:
            return f"loaded on {self._pipe.device}"
        if self._error is not None:
            return self._error[1]
        cpu = _pick_device_name(self.device_name) == "cpu"
        slow = "; on a CPU each 512 px image takes minutes" if cpu else ""
        if self._looks_local():
            return f"not loaded yet (loads from its folder on first use){slow}"
        return f"not loaded yet: the first image loads it (a one-time download of about {SD_DOWNLOAD} unless " \
               f"it is in the Hugging Face cache){slow}"

    @property
    def load_note(self) -> str:
        """What the first use costs, for the progress line."""
        return f"loading {self.model}" + ("" if self._looks_local() else
                                          f" (the first use downloads about {SD_DOWNLOAD} unless cached)")

    @property
    def loaded(self) -> bool:
        return self._pipe is not None

    def _looks_local(self) -> bool:
        m = self.model
        # Hub ids are "owner/name"; anything else path-like is a local folder
        return m.startswith((".", "/", "~")) or "\\" in m or m.count("/") > 1 or Path(m).expanduser().exists()

    def pipeline(self):
        if self._pipe is not None:
            return self._pipe
        with self._load_lock:
            if self._pipe is not None:
                return self._pipe
            if self._error is not None and time.time() - self._error[0] < RETRY_AFTER_S:
                raise SDUnavailable(self._error[1])
            try:
                self._pipe = self._load()
                self._error = None
            except SDUnavailable as e:
                msg = f"Text-to-image is not available: {e}"
                self._error = (time.time(), msg)
                raise SDUnavailable(msg) from e
            return self._pipe

    def _load(self):
        try:
            from diffusers import StableDiffusionPipeline
        except ImportError as e:
            raise SDUnavailable(f"text-to-image needs the diffusers and transformers packages ({e})") from e
        dev = _pick_device(self.device_name)
        dtype = self.dtype or (torch.float16 if dev.type == "cuda" else torch.float32)
        src = self.model
        if self._looks_local():
            p = Path(src).expanduser()
            if not p.is_dir():
                raise SDUnavailable(f"the folder {src} does not exist; --sd-model takes a diffusers pipeline "
                                    "folder or a Hugging Face Hub id such as lambdalabs/sd-pokemon-diffusers")
            if not (p / "model_index.json").is_file():
                raise SDUnavailable(f"{src} is not a diffusers pipeline folder (no model_index.json); "
                                    "--sd-model takes such a folder or a Hugging Face Hub id")
            src = str(p)
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():  # newer diffusers renamed torch_dtype; older ones only know it
                warnings.filterwarnings("ignore", message=".*torch_dtype.*")
                pipe = StableDiffusionPipeline.from_pretrained(src, torch_dtype=dtype, safety_checker=None,
                                                               requires_safety_checker=False)
        except Exception as e:  # OSError when offline/uncached, ValueError/KeyError for wrong folders
            log.warning("Stable Diffusion %s could not be loaded: %s: %s", self.model, type(e).__name__, e)
            raise SDUnavailable(self._load_failure(e, local=self._looks_local())) from e
        pipe = pipe.to(dev)
        pipe.set_progress_bar_config(disable=True)
        if dev.type == "cuda":
            pipe.unet.to(memory_format=torch.channels_last)
        self._default_procs = dict(pipe.unet.attn_processors)
        log.info("loaded Stable Diffusion %s on %s in %.1fs", self.model, dev, time.perf_counter() - t0)
        return pipe

    def _load_failure(self, e: BaseException, local: bool) -> str:
        """One short sentence saying what is missing and what to do (the raw error goes to the server log:
        diffusers' and huggingface_hub's texts talk about URLs, caches and ``local_files_only``)."""
        kinds = {c.__name__ for c in type(e).__mro__}
        if local:
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            first = re.sub(r"https?://\S+", "", first).strip()[:160]
            return f"the folder {self.model} could not be loaded as a Stable Diffusion pipeline " \
                   f"({type(e).__name__}{': ' + first if first else ''})"
        if kinds & {"RepositoryNotFoundError", "GatedRepoError", "RevisionNotFoundError"}:
            return f"{self.model} is not a model on the Hugging Face Hub that can be downloaded " \
                   f"({type(e).__name__}); check --sd-model"
        return (f"the {self.model} weights (about {SD_DOWNLOAD}, downloaded once) are not on this machine and "
                f"could not be downloaded ({type(e).__name__}). Connect to the internet and retry in a minute, "
                "or pass a downloaded copy with --sd-model FOLDER. On a CPU each image takes minutes")

    # ---- checks ----------------------------------------------------------------------------
    def size_multiple(self, pipe=None) -> int:
        pipe = pipe or self.pipeline()
        n_down = len(getattr(pipe.unet.config, "down_block_types", []) or [1])
        return int(pipe.vae_scale_factor) * 2 ** max(0, n_down - 1)

    def _check(self, pipe, prompt, negative, steps, guidance, width, height):
        prompt = as_text(prompt, "prompt", LIMITS.max_prompt_chars)
        negative = as_text(negative, "negative prompt", LIMITS.max_prompt_chars, required=False)
        steps = as_int(steps, "steps", LIMITS.min_steps, LIMITS.max_steps)
        guidance = as_float(guidance, "guidance", LIMITS.min_guidance, LIMITS.max_guidance)
        width = as_int(width, "width", LIMITS.min_sd_size, LIMITS.max_sd_size)
        height = as_int(height, "height", LIMITS.min_sd_size, LIMITS.max_sd_size)
        mult = self.size_multiple(pipe)
        for name, v in (("width", width), ("height", height)):
            if v % mult:
                raise AppInputError(f"{name} must be a multiple of {mult} for this model, not {v}")
        return prompt, negative, steps, guidance, width, height

    # ---- pieces ----------------------------------------------------------------------------
    def initial_latents(self, pipe, seed: int, height: int, width: int) -> torch.Tensor:
        seed = as_int(seed, "seed", 0, LIMITS.max_seed)
        shape = (1, pipe.unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
        z = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)
        return z.to(pipe.device, pipe.unet.dtype)

    def prompt_tokens(self, pipe, prompt: str) -> tuple[list[int], list[str], bool]:
        """(positions in the text encoder's sequence, readable tokens, truncated?) of the prompt's tokens."""
        tok = pipe.tokenizer
        full = tok(prompt, truncation=False).input_ids
        ids = tok(prompt, truncation=True, max_length=tok.model_max_length).input_ids
        special = set(tok.all_special_ids)
        pos = [i for i, t in enumerate(ids) if t not in special]
        words = [str(w).replace("</w>", "").replace("▁", "").strip() or "␣"
                 for w in tok.convert_ids_to_tokens([ids[i] for i in pos])]
        return pos, words, len(full) > len(ids)

    def _run(self, pipe, *, prompt=None, negative=None, prompt_embeds=None, negative_embeds=None, latents,
             steps, guidance, width, height, on_step: StepCallback | None, store: AttentionStore | None):
        def step_end(_pipe, i, _t, kwargs):
            if on_step is not None:
                on_step(i + 1, steps)
            return kwargs

        kw = dict(num_inference_steps=steps, guidance_scale=guidance, height=height, width=width, latents=latents,
                  output_type="pil", callback_on_step_end=step_end)
        if prompt_embeds is not None:
            kw.update(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_embeds)
        else:
            kw.update(prompt=prompt, negative_prompt=negative or None)
        if store is not None:
            pipe.unet.set_attn_processor(store)
        try:
            with torch.inference_mode():
                return pipe(**kw).images[0]
        finally:
            if store is not None:
                pipe.unet.set_attn_processor(dict(self._default_procs))

    # ---- the three things the app does ---------------------------------------------------------
    def text_to_image(self, prompt: str, negative_prompt: str = "", steps: int = 25, guidance: float = 7.5,
                      seed: int = 0, width: int = 512, height: int = 512, attention: bool = True,
                      on_step: StepCallback | None = None) -> SDImage:
        pipe = self.pipeline()
        prompt, negative, steps, guidance, width, height = self._check(pipe, prompt, negative_prompt, steps,
                                                                       guidance, width, height)
        seed = as_int(seed, "seed", 0, LIMITS.max_seed)
        with self._run_lock:
            latents = self.initial_latents(pipe, seed, height, width)
            store = None
            if attention:
                store = AttentionStore((latents.shape[2], latents.shape[3]))
            img = self._run(pipe, prompt=prompt, negative=negative, latents=latents, steps=steps,
                            guidance=guidance, width=width, height=height, on_step=on_step, store=store)
        out = SDImage(img, seed, prompt)
        if store is not None:
            pos, words, truncated = self.prompt_tokens(pipe, prompt)
            out.tokens, out.truncated = words, truncated
            out.maps = store.token_maps(pos, (img.height, img.width)) if pos else \
                np.zeros((0, img.height, img.width), np.float32)
        return out

    def interpolate_seeds(self, prompt: str, seed_a: int, seed_b: int, frames: int, negative_prompt: str = "",
                          steps: int = 25, guidance: float = 7.5, width: int = 512, height: int = 512,
                          mode: str = "slerp", on_step: StepCallback | None = None) -> list[Image.Image]:
        """The same prompt from noise walked between two seeds' initial latents."""
        pipe = self.pipeline()
        prompt, negative, steps, guidance, width, height = self._check(pipe, prompt, negative_prompt, steps,
                                                                       guidance, width, height)
        frames = as_int(frames, "frames", LIMITS.min_sd_frames, LIMITS.max_sd_frames)
        mode = as_choice(mode, "mode", ["slerp", "lerp"])
        out = []
        with self._run_lock:
            za = self.initial_latents(pipe, seed_a, height, width)
            zb = self.initial_latents(pipe, seed_b, height, width)
            for f in range(frames):
                t = f / (frames - 1)
                z = slerp_tensors(za.float(), zb.float(), t) if mode == "slerp" else za.float() + (zb.float() - za.float()) * t
                out.append(self._run(pipe, prompt=prompt, negative=negative, latents=z.to(za.dtype), steps=steps,
                                     guidance=guidance, width=width, height=height,
                                     on_step=_frame_progress(on_step, f, frames), store=None))
        return out

    def interpolate_prompts(self, prompt_a: str, prompt_b: str, seed: int, frames: int, negative_prompt: str = "",
                            steps: int = 25, guidance: float = 7.5, width: int = 512, height: int = 512,
                            on_step: StepCallback | None = None) -> list[Image.Image]:
        """One seed's noise, the text embedding walked linearly from prompt A to prompt B."""
        pipe = self.pipeline()
        prompt_a, negative, steps, guidance, width, height = self._check(pipe, prompt_a, negative_prompt, steps,
                                                                         guidance, width, height)
        prompt_b = as_text(prompt_b, "prompt B", LIMITS.max_prompt_chars)
        frames = as_int(frames, "frames", LIMITS.min_sd_frames, LIMITS.max_sd_frames)
        cfg = guidance > 1 and getattr(pipe.unet.config, "time_cond_proj_dim", None) is None
        out = []
        with self._run_lock, torch.inference_mode():
            z = self.initial_latents(pipe, seed, height, width)
            ea, neg = pipe.encode_prompt(prompt_a, pipe.device, 1, cfg, negative or None)
            eb, _ = pipe.encode_prompt(prompt_b, pipe.device, 1, cfg, negative or None)
            for f in range(frames):
                t = f / (frames - 1)
                e = ea + (eb - ea) * t
                out.append(self._run(pipe, prompt_embeds=e, negative_embeds=neg if cfg else None, latents=z.clone(),
                                     steps=steps, guidance=guidance, width=width, height=height,
                                     on_step=_frame_progress(on_step, f, frames), store=None))
        return out


def _frame_progress(on_step: StepCallback | None, frame: int, frames: int) -> StepCallback | None:
    """Steps of frame ``frame`` reported as progress over all frames."""
    if on_step is None:
        return None
    return lambda i, n: on_step(frame * n + i, frames * n)
