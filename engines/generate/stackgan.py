"""StackGAN (Zhang, Xu, Li, Zhang, Wang, Huang and Metaxas, ICCV 2017, "StackGAN: Text to Photo-realistic Image
Synthesis with Stacked Generative Adversarial Networks"); written from the paper and the authors' PyTorch code
(hanzhanggit/StackGAN-Pytorch: ``code/model.py``, ``trainer.py``, ``miscc/utils.py``). docs/stackgan.md.

Text. A caption (engines/text.py: a captions file, or composed from the labels file's columns) -> a sentence
vector from a text encoder: ``gru`` (default; word embeddings + a bidirectional GRU, its vocabulary built from
the training captions and stored in the config), ``mean`` (mean of word vectors) or ``clip`` (a frozen pretrained
CLIP text transformer, --set clip_model=DIR_OR_HUB_ID). The paper's char-CNN-RNN embeddings were pretrained for
image-text matching and fixed; the word encoder here learns that matching inside the GAN: it is trained with
Stage-I's D by the matching-aware loss (telling real images with their captions from real images with other
captions needs caption vectors that differ), and G reads its vectors as fixed (detached), as G reads the paper's.
In phase 2 it is frozen with the rest of Stage-I.

Conditioning augmentation (CA). A fully connected layer maps the sentence vector to mu and log sigma (leaky
ReLU 0.2 as in the authors' TensorFlow code; the PyTorch port has ReLU and log variance), c = mu + sigma * eps
(reparameterised, eps ~ N(0, I)), and lambda * KL(N(mu, sigma^2) || N(0, I)) joins G's loss (lambda = 1 as in
the paper; the reference's configs use 2). The KL is averaged over batch and dimensions, as the references do.

Stage-I (at half the image size). G: [z, c] -> fc (no bias) + BatchNorm1d + ReLU -> 4x4 x 8w, then up-blocks
(nearest x2, 3x3 conv, BatchNorm, ReLU) halving the width, a 3x3 conv and tanh. D: stride-2 4x4 convs with
leaky ReLU 0.2 (BatchNorm after the first) down to 4x4 (3x3 convs halve a width above 8w), then the
matching-aware head: the sentence vector through D's own fully connected layer + leaky ReLU (the authors'
TensorFlow ``context_embedding``; the PyTorch port feeds G's mu instead, which would leave a trained encoder no
matching signal), repeated over 4x4 and concatenated, 3x3 conv + BatchNorm + leaky ReLU, a 4x4 conv to one logit.
Stage-II (the image size). G: Stage-I's image -> a down-sampling encoder (3x3 conv + ReLU, two stride-2 4x4
convs + BatchNorm + ReLU) to 1/8 of the size, Stage-II's own CA code joined again (repeated over the map) and
mixed by a 3x3 conv, residual blocks, up-blocks to the full size, 3x3 conv, tanh. D: as Stage-I's, one more
stride-2 conv per doubling, with conditional and unconditional logits (the reference's STAGE2_D).

Losses (the reference's compute_discriminator_loss / compute_generator_loss; BCE on logits): D sees real
images with their captions (-> real), real images with mismatched captions (the batch's captions shifted by
one, -> fake) and fakes with their captions (-> fake): Stage-I D = real + (fake + wrong) / 2; Stage-II D, which
also has unconditional logits, = (real + uncond real) / 2 + (fake + wrong + uncond fake) / 3. G: the fake's
conditional (+ unconditional) logits -> real, plus lambda * KL.

Two phases, as the paper trains them: epochs 1..``stage1_epochs`` train Stage-I (its G with the text encoder,
and its D); after that Stage-II trains on Stage-I's output with Stage-I frozen (no gradients, eval mode so its
BatchNorm statistics stay what sampling uses; the reference keeps them in training mode). The phase is a
function of the epoch (``start_epoch``) and a buffer of the export, so a resumed run continues exactly, across
the switch too. Each phase has its own Adam (lr 2e-4, betas 0.5/0.999), halved every ``lr_decay_every`` epochs
of the phase (the paper: every 100 epochs). Until Stage-II has trained, samples are Stage-I's images brought to
the image size (nearest), so grids and FID show progress in phase 1.

Sampling. ``sample(n, seed, prompt="...")``; without a prompt a training caption is drawn from the export's
caption bank (engines.text.CaptionBank) by the latent itself (its last coordinate), so an image depends on its
seed alone; ``labels=`` restricts the draw to captions of images with those labels. The latent holds z, the
two CA noises and that draw: z_dim + 2 cond_dim + 1 numbers.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..base import Engine, frozen, init_dcgan_weights, n_upsamplings
from ..labels import ConditionalEngine, LabelError
from ..registry import register
from ..text import (CaptionBank, CaptionError, ClipTextEncoder, WordEncoder, WordVocabulary, bank_captions,
                    captions_for_images, clip_width, read_caption_table)

TEXT_ENCODERS = ("gru", "mean", "clip")


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1, bias=False)


def up_block(cin: int, cout: int) -> nn.Sequential:
    """Nearest x2, 3x3 conv, BatchNorm, ReLU (the reference's upBlock)."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(cin, cout), nn.BatchNorm2d(cout),
                         nn.ReLU(True))


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.block = nn.Sequential(conv3x3(ch, ch), nn.BatchNorm2d(ch), nn.ReLU(True), conv3x3(ch, ch),
                                   nn.BatchNorm2d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.block(x))


# ---- conditioning augmentation ------------------------------------------------------------------------------
class CondAugment(nn.Module):
    """Sentence vector -> (c, mu, log sigma) with c = mu + sigma * eps."""

    def __init__(self, text_dim: int, cond_dim: int):
        super().__init__()
        self.cond_dim = int(cond_dim)
        self.fc = nn.Linear(text_dim, 2 * cond_dim)

    def encode(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.leaky_relu(self.fc(t), 0.2)
        return h[:, :self.cond_dim], h[:, self.cond_dim:]

    def forward(self, t: torch.Tensor, eps: torch.Tensor | None = None):
        mu, log_sigma = self.encode(t)
        if eps is None:
            eps = torch.randn_like(mu)
        return mu + log_sigma.exp() * eps.to(mu.dtype), mu, log_sigma


def kl_loss(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per dimension, averaged over batch and dimensions (the references' mean):
    -log sigma + (sigma^2 + mu^2 - 1) / 2."""
    mu, log_sigma = mu.float(), log_sigma.float()
    return (-log_sigma + 0.5 * (torch.exp(2 * log_sigma) + mu.pow(2) - 1)).mean()


# ---- generators ----------------------------------------------------------------------------------------------
class Stage1Generator(nn.Module):
    def __init__(self, z_dim: int, text_dim: int, cond_dim: int, width: int, size: int):
        super().__init__()
        self.ca = CondAugment(text_dim, cond_dim)
        top = 8 * width
        self.top = top
        self.fc = nn.Sequential(nn.Linear(z_dim + cond_dim, top * 16, bias=False), nn.BatchNorm1d(top * 16),
                                nn.ReLU(True))
        ws = [max(1, top // 2 ** i) for i in range(n_upsamplings(size) + 1)]
        self.up = nn.Sequential(*[up_block(a, b) for a, b in zip(ws[:-1], ws[1:])])
        self.img = nn.Sequential(conv3x3(ws[-1], 3), nn.Tanh())

    def forward(self, text: torch.Tensor, z: torch.Tensor, eps: torch.Tensor | None = None):
        c, mu, log_sigma = self.ca(text, eps)
        h = self.fc(torch.cat([z.to(c.dtype), c], 1)).view(-1, self.top, 4, 4)
        return self.img(self.up(h)), mu, log_sigma


class Stage2Generator(nn.Module):
    """Refines Stage-I's image (half the size) to the full size. ``active``: Stage-II has been trained (phase 2);
    until then the engine samples Stage-I's images."""

    def __init__(self, text_dim: int, cond_dim: int, width: int, res_blocks: int, size: int):
        super().__init__()
        self.ca = CondAugment(text_dim, cond_dim)
        w = width
        self.encoder = nn.Sequential(
            conv3x3(3, w), nn.ReLU(True),
            nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(True),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(True))
        self.joint = nn.Sequential(conv3x3(4 * w + cond_dim, 4 * w), nn.BatchNorm2d(4 * w), nn.ReLU(True))
        self.residual = nn.Sequential(*[ResBlock(4 * w) for _ in range(res_blocks)])
        ws = [max(1, 4 * w // 2 ** i) for i in range(4)]  # 1/8 -> 1/4 -> 1/2 -> full size
        self.up = nn.Sequential(*[up_block(a, b) for a, b in zip(ws[:-1], ws[1:])])
        self.img = nn.Sequential(conv3x3(ws[-1], 3), nn.Tanh())
        self.register_buffer("active", torch.zeros((), dtype=torch.bool))

    def forward(self, stage1: torch.Tensor, text: torch.Tensor, eps: torch.Tensor | None = None):
        h = self.encoder(stage1)
        c, mu, log_sigma = self.ca(text, eps)
        h = self.joint(torch.cat([h, c.to(h.dtype)[:, :, None, None].expand(-1, -1, *h.shape[-2:])], 1))
        return self.img(self.up(self.residual(h))), mu, log_sigma


# ---- discriminators --------------------------------------------------------------------------------------------
class MatchingDiscriminator(nn.Module):
    """``features(x)`` -> 4x4 maps; ``embed(text)``: the sentence vector through D's own fully connected layer and
    leaky ReLU (the authors' TensorFlow ``context_embedding``); ``cond_logits(h, code)`` (is this a real image
    matching this text?) and, with ``uncond``, ``uncond_logits(h)`` (is this a real image?)."""

    def __init__(self, size: int, width: int, text_dim: int, cond_dim: int, uncond: bool):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(text_dim, cond_dim), nn.LeakyReLU(0.2, True))
        n = n_upsamplings(size)
        layers: list[nn.Module] = [nn.Conv2d(3, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        ch = width
        for _ in range(n - 1):
            layers += [nn.Conv2d(ch, 2 * ch, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * ch), nn.LeakyReLU(0.2, True)]
            ch *= 2
        while ch > 8 * width:  # the reference's 3x3 convs back to 8w at 4x4 (STAGE2_D)
            layers += [conv3x3(ch, ch // 2), nn.BatchNorm2d(ch // 2), nn.LeakyReLU(0.2, True)]
            ch //= 2
        self.encode = nn.Sequential(*layers)
        self.cond = nn.Sequential(conv3x3(ch + cond_dim, ch), nn.BatchNorm2d(ch), nn.LeakyReLU(0.2, True),
                                  nn.Conv2d(ch, 1, 4, 4))
        self.uncond = nn.Conv2d(ch, 1, 4, 4) if uncond else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)

    def cond_logits(self, h: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        c = code.to(h.dtype)[:, :, None, None].expand(-1, -1, *h.shape[-2:])
        return self.cond(torch.cat([h, c], 1)).flatten().float()

    def uncond_logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.uncond(h).flatten().float()


def discriminator_loss(D: MatchingDiscriminator, real: torch.Tensor, fake: torch.Tensor,
                       text: torch.Tensor) -> dict[str, torch.Tensor]:
    """The matching-aware D loss: real+matching -> 1, real+mismatched (captions shifted by one) -> 0,
    fake+matching -> 0; with unconditional logits the reference's (real + u_real) / 2 + (fake + wrong + u_fake) / 3,
    else real + (fake + wrong) / 2. ``text``: the captions' sentence vectors (their gradient trains the text
    encoder: telling matching from mismatched captions is what makes its vectors informative)."""
    h_real, h_fake = D.features(real), D.features(fake)
    cond = D.embed(text)
    real_logit = D.cond_logits(h_real, cond)
    wrong_logit = D.cond_logits(h_real[:-1], cond[1:])
    fake_logit = D.cond_logits(h_fake, cond)
    l_real, l_wrong, l_fake = (F.softplus(-real_logit).mean(), F.softplus(wrong_logit).mean(),
                               F.softplus(fake_logit).mean())
    if D.uncond is not None:
        u_real, u_fake = F.softplus(-D.uncond_logits(h_real)).mean(), F.softplus(D.uncond_logits(h_fake)).mean()
        loss = (l_real + u_real) / 2 + (l_fake + l_wrong + u_fake) / 3
    else:
        loss = l_real + (l_fake + l_wrong) / 2
    return {"loss": loss, "real": l_real, "wrong": l_wrong, "fake": l_fake, "real_logit": real_logit.detach(),
            "wrong_logit": wrong_logit.detach(), "fake_logit": fake_logit.detach()}


def generator_loss(D: MatchingDiscriminator, fake: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    h = D.features(fake)
    loss = F.softplus(-D.cond_logits(h, D.embed(text.detach()))).mean()
    if D.uncond is not None:
        loss = loss + F.softplus(-D.uncond_logits(h)).mean()
    return loss


def _whole(c: dict[str, Any], key: str, lo: int) -> int:
    v = c[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{key} must be a whole number >= {lo}, not {v!r}")
    return v


@register
class StackGAN(ConditionalEngine, Engine):
    """text-to-image: conditioning augmentation, Stage-I at half size, Stage-II refining to the full size"""
    name = "stackgan"
    protocol_notes = ("two phases as in the paper (stage1_epochs of Stage-I, then Stage-II with Stage-I frozen), "
                      "each with its own Adam halved every lr_decay_every epochs; KL weight 1 (the paper; the "
                      "reference's configs use 2); a word-level text encoder trained with G instead of the paper's "
                      "pretrained char-CNN-RNN (or a frozen CLIP text encoder); DiffAugment on D's inputs")

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {"lr": 2e-4, "betas": [0.5, 0.999], "z_dim": 100, "cond_dim": 128,
                "g1_width": 64, "d1_width": 64, "g2_width": 64, "d2_width": 64, "residual_blocks": 2,
                "kl_weight": 1.0, "stage1_epochs": 500, "lr_decay_every": 100,
                "text_encoder": "gru", "clip_model": None, "word_dim": 128, "text_dim": 256, "max_words": 48,
                "max_vocabulary": 4000,
                # captions: a captions CSV (id,caption); None composes them from the labels file's columns
                "captions": None, "caption_columns": "auto",
                # filled in from the data by config_for_data: what the nets and the caption bank are sized by
                "text_vocabulary": None, "caption_bank": [0, 0], "caption_source": None,
                "labels": None}

    def __init__(self, config=None, image_size: int = 128, *, training: bool = True):
        super().__init__(config, image_size, training=training)
        c = self.config
        self._check(c)
        self.init_labels()
        size = self.image_size
        if c["text_encoder"] == "clip":
            self.vocab = None
            self.text = ClipTextEncoder(c["clip_model"], c["text_dim"])
        else:
            if c["text_vocabulary"] is None:
                raise ValueError("stackgan builds its word vocabulary from the captions: train it with "
                                 "pokelab train stackgan --labels FILE (text_vocabulary is filled in from the data)")
            self.vocab = WordVocabulary(c["text_vocabulary"])
            self.text = WordEncoder(len(self.vocab), c["word_dim"], c["text_dim"], c["text_encoder"])
        self.G1 = Stage1Generator(c["z_dim"], c["text_dim"], c["cond_dim"], c["g1_width"], size // 2)
        self.G2 = Stage2Generator(c["text_dim"], c["cond_dim"], c["g2_width"], c["residual_blocks"], size)
        for m in (self.G1, self.G2):
            m.apply(init_dcgan_weights)  # N(0, 0.02) convs and linears, N(1, 0.02) norm scales: weights_init
        n_caps, n_bytes = c["caption_bank"]
        self.bank = CaptionBank(n_caps, n_bytes, self.label_spec.num_classes)
        self._table: dict[str, torch.Tensor] | None = None   # the training captions, encoded (set_captions)
        self.caption_report: dict[str, Any] | None = None
        self._phase_applied = 0
        if training:
            self.D1 = MatchingDiscriminator(size // 2, c["d1_width"], c["text_dim"], c["cond_dim"], uncond=False)
            self.D2 = MatchingDiscriminator(size, c["d2_width"], c["text_dim"], c["cond_dim"], uncond=True)
            for m in (self.D1, self.D2):
                m.apply(init_dcgan_weights)
            # the word encoder learns with Stage-I's D, from the matching-aware loss (module docstring)
            self.optimizers = {"G1": self._adam(self.G1.parameters()),
                               "D1": self._adam([*self.text.parameters(), *self.D1.parameters()]),
                               "G2": self._adam(self.G2.parameters()), "D2": self._adam(self.D2.parameters())}

    def _adam(self, params) -> torch.optim.Optimizer:
        opt = self.make_adam(list(params))
        for g in opt.param_groups:  # the decay schedule's base; saved with the optimiser, so resume keeps it
            g.setdefault("initial_lr", g["lr"])
        return opt

    def _check(self, c: dict[str, Any]) -> None:
        size = self.image_size
        if size < 16 or size & (size - 1):
            raise ValueError(f"stackgan needs a power-of-two image size of 16 or more (Stage-I draws half of it), "
                             f"not {size}")
        for key, lo in (("z_dim", 1), ("cond_dim", 1), ("g1_width", 1), ("d1_width", 1), ("g2_width", 1),
                        ("d2_width", 1), ("residual_blocks", 0), ("stage1_epochs", 0), ("lr_decay_every", 0),
                        ("word_dim", 1), ("text_dim", 1), ("max_words", 1), ("max_vocabulary", 1)):
            _whole(c, key, lo)
        if c["text_encoder"] not in TEXT_ENCODERS:
            raise ValueError(f"text_encoder must be one of {', '.join(TEXT_ENCODERS)}, not {c['text_encoder']!r}")
        if c["text_encoder"] == "clip" and not (isinstance(c["clip_model"], str) and c["clip_model"].strip()):
            raise ValueError("text_encoder=clip needs --set clip_model=DIR_OR_HUB_ID (a CLIP text model)")
        kl = c["kl_weight"]
        if isinstance(kl, bool) or not isinstance(kl, (int, float)) or not 0 <= kl < math.inf:
            raise ValueError(f"kl_weight must be a number >= 0, not {kl!r}")
        bank = c["caption_bank"]
        if not (isinstance(bank, (list, tuple)) and len(bank) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in bank)):
            raise ValueError(f"caption_bank must be [captions, bytes], not {bank!r}")
        if c["captions"] is not None and not isinstance(c["captions"], str):
            raise ValueError(f"captions must be a file name, not {c['captions']!r}")

    # ---- captions from the data (the trainer calls these two) --------------------------------------------------
    @classmethod
    def config_for_data(cls, config: dict[str, Any], ds: Any) -> dict[str, Any]:
        """The config with what the data decides: the caption source (a captions file, or the labels file the
        captions are composed from) and its hash, the word vocabulary (or CLIP's width) and the caption bank's
        size. A run that recorded them (a resumed one) keeps its vocabulary and must find the same captions."""
        cfg = cls.resolve_config(config)
        table, caps = cls._read_captions(cfg, ds)
        return cls.text_config(cfg, caps.per_image, getattr(ds, "labels", None), source=table.record())

    @staticmethod
    def _read_captions(cfg: dict[str, Any], ds: Any):
        recorded = cfg.get("caption_source")
        if isinstance(recorded, dict) and isinstance(recorded.get("file"), str):
            path, columns = recorded["file"], recorded.get("columns") or cfg["caption_columns"]
        else:
            label_file = (getattr(ds, "label_record", None) or {}).get("file")
            path, columns = cfg["captions"] or label_file, cfg["caption_columns"]
            if not path:
                raise CaptionError("stackgan needs captions: --set captions=FILE (id,caption rows), or the labels "
                                   "file (--labels) to compose them from")
        table = read_caption_table(path, columns)
        if isinstance(recorded, dict) and recorded.get("sha256") and recorded["sha256"] != table.sha256:
            raise CaptionError(f"{table.path}: the captions changed since the run started (sha256 "
                               f"{str(recorded['sha256'])[:12]} -> {table.sha256[:12]}); resume needs the same ones")
        files = list(getattr(ds, "files", None) or [])
        if len(files) != len(ds.images):
            raise CaptionError("the image set does not list its files; captions are matched to file names")
        return table, captions_for_images(files, table)

    @classmethod
    def text_config(cls, config: dict[str, Any], per_image: Sequence[Sequence[str]],
                    labels: torch.Tensor | None = None, source: dict[str, Any] | None = None) -> dict[str, Any]:
        cfg = cls.resolve_config(config)
        texts = [t for caps in per_image for t in caps]
        if cfg["text_encoder"] == "clip":
            cfg["text_dim"] = clip_width(cfg["clip_model"])  # loads it: a wrong model fails before training
            cfg["text_vocabulary"] = None
        elif cfg["text_vocabulary"] is None:
            cfg["text_vocabulary"] = list(WordVocabulary.build(texts, cfg["max_vocabulary"]).words)
        bank_texts, _, _ = bank_captions(per_image, labels)
        cfg["caption_bank"] = list(CaptionBank.sizes(bank_texts))
        if source is not None:
            cfg["caption_source"] = source
        return cfg

    @classmethod
    def stand_in_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """A config whose data-decided parts are stand-ins, to check the other settings before the data is read
        (pokelab sweep): a one-word vocabulary where none is recorded."""
        cfg = dict(config)
        if cfg.get("text_encoder") != "clip" and cfg.get("text_vocabulary") is None:
            cfg["text_vocabulary"] = ["_"]
        return cfg

    def batch_conditions(self, ds: Any) -> torch.Tensor:
        """What the trainer gathers per batch instead of the multi-hot labels: for every image (row) its first
        caption's index in the engine's caption table and its caption count; each step draws one of them."""
        _, caps = self._read_captions(self.config, ds)
        self.caption_report = caps.report()  # run.json's engine_info: source, counts, rows naming no image
        return self.set_captions(caps.per_image, getattr(ds, "labels", None))

    def set_captions(self, per_image: Sequence[Sequence[str]], labels: torch.Tensor | None = None) -> torch.Tensor:
        """Encode the training captions once (word ids, or CLIP vectors: CLIP is frozen), fill the caption bank,
        and return the per-image rows [N, 2] (first caption, count) on the engine's device."""
        if any(not caps for caps in per_image):
            raise CaptionError("every training image needs at least one caption")
        texts = [t for caps in per_image for t in caps]
        counts = torch.tensor([len(c) for c in per_image], dtype=torch.long)
        first = torch.cumsum(counts, 0) - counts
        dev = self.device
        if self.vocab is not None:
            ids, lengths = self.vocab.encode(texts, self.config["max_words"], strict=False)
            self._table = {"ids": ids.to(dev), "lengths": lengths.to(dev)}
        else:
            self._table = {"vectors": self.text.encode_texts(texts, dev)}
        bank_texts, weights, rows = bank_captions(per_image, labels)
        self.bank.fill(bank_texts, weights, rows)
        return torch.stack([first, counts], 1).to(dev)

    # ---- the phase switch --------------------------------------------------------------------------------------
    @property
    def phase(self) -> int:
        return 2 if bool(self.G2.active) else 1

    def set_phase(self, phase: int) -> None:
        self.G2.active.fill_(phase == 2)
        self._apply_phase()

    def _apply_phase(self) -> None:
        """Stage-I (its G and the text encoder) trains in phase 1 and is frozen in phase 2: no gradients, and
        eval mode (its BatchNorm statistics stay the ones sampling uses)."""
        phase = self.phase
        if self._phase_applied == phase:
            return
        for m in (self.text, self.G1):
            m.requires_grad_(phase == 1)
        if self.optimizers:  # the active phase's optimisers first: the trainer logs the first one's lr
            order = ("G1", "D1", "G2", "D2") if phase == 1 else ("G2", "D2", "G1", "D1")
            self.optimizers = {k: self.optimizers[k] for k in order}
            self.scalers = {k: self.scalers[k] for k in order if k in self.scalers}
        self._phase_applied = phase
        self.train(self.training)

    def train(self, mode: bool = True) -> "StackGAN":
        super().train(mode)
        if getattr(self, "_phase_applied", 0) == 2:
            self.text.eval()
            self.G1.eval()
        return self

    def load_state_dict_full(self, state: dict[str, Any]) -> None:
        super().load_state_dict_full(state)
        self._phase_applied = 0
        self._apply_phase()

    def start_epoch(self, epoch: int, epochs: int) -> None:
        s1 = int(self.config["stage1_epochs"])
        phase = 1 if epoch <= s1 else 2
        self.set_phase(phase)
        every = int(self.config["lr_decay_every"])
        k = (epoch - 1 if phase == 1 else epoch - s1 - 1) // every if every else 0
        self.set_lr_factor(0.5 ** k, ("G1", "D1") if phase == 1 else ("G2", "D2"))

    # ---- text ----------------------------------------------------------------------------------------------
    def _caption_vectors(self, idx: torch.Tensor) -> torch.Tensor:
        t = self._table
        if t is None:
            raise RuntimeError("stackgan has no training captions: the trainer calls batch_conditions(dataset) "
                               "(or call set_captions) before training")
        if next(iter(t.values())).device != idx.device:  # encoded before the trainer moved the engine (setup)
            self._table = t = {k: v.to(idx.device) for k, v in t.items()}
        if "vectors" in t:
            return t["vectors"].index_select(0, idx)
        return self.text(t["ids"].index_select(0, idx), t["lengths"].index_select(0, idx))

    def encode_prompts(self, texts: Sequence[str]) -> torch.Tensor:
        """Sentence vectors [n, text_dim]; UnknownWordsError for a prompt with no known word."""
        if self.vocab is None:
            return self.text.encode_texts(list(texts), self.device)
        ids, lengths = self.vocab.encode(list(texts), self.config["max_words"], strict=True)
        return self.text(ids.to(self.device), lengths.to(self.device)).float()

    def prompt_notes(self, prompt: str) -> list[str]:
        """What the encoder leaves out of a prompt: unknown words, words past max_words, CLIP's length cut."""
        if self.vocab is None:
            cut = self.text.truncated(prompt, self.device)
            return ["the prompt was cut to the text encoder's length"] if cut else []
        ids, unknown = self.vocab.split(prompt)
        notes = []
        if unknown and ids:
            notes.append("unknown words left out: " + ", ".join(dict.fromkeys(unknown)))
        if len(ids) > self.config["max_words"]:
            notes.append(f"only the first {self.config['max_words']} known words are read")
        return notes

    def prompts_for(self, z: torch.Tensor, labels: Any = None, prompt: Any = None) -> list[str]:
        """The caption of each latent row: the prompt (one for all, or one per row), else a training caption
        drawn by the row's last coordinate (among images with ``labels`` when given)."""
        n = len(z)
        if prompt is not None:
            if labels is not None:
                raise LabelError("give a prompt or labels, not both (labels pick training captions)")
            texts = [prompt] if isinstance(prompt, str) else list(prompt)
            if not texts or not all(isinstance(t, str) for t in texts):
                raise CaptionError("a prompt must be text (or a list of texts, one per image)")
            if len(texts) == 1:
                texts = texts * n
            if len(texts) != n:
                raise CaptionError(f"{len(texts)} prompts for {n} images")
            return texts
        u = 0.5 * (1 + torch.erf(z[:, -1].float().cpu() / math.sqrt(2)))  # the normal CDF: uniform in [0, 1)
        y = self.label_rows(labels, n) if labels is not None else None
        return self.bank.pick(u, y)

    # ---- sampling -------------------------------------------------------------------------------------------
    def latent(self, n: int, seed: int | None = 0) -> torch.Tensor:
        c = self.config
        g = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        return torch.randn(n, c["z_dim"] + 2 * c["cond_dim"] + 1, generator=g).to(self.device)

    def _split_latent(self, z: torch.Tensor):
        zd, cd = self.config["z_dim"], self.config["cond_dim"]
        return z[:, :zd], z[:, zd:zd + cd], z[:, zd + cd:zd + 2 * cd]

    def generate(self, z: torch.Tensor, text: torch.Tensor, stage: int | None = None) -> torch.Tensor:
        """Images from latents and sentence vectors. ``stage`` 1: Stage-I's own (half-size) images; 2: Stage-II's;
        None: Stage-II's once it has trained, else Stage-I's brought to the image size (nearest)."""
        noise, e1, e2 = self._split_latent(z)
        text = text.to(z.device)
        img1, _, _ = self.G1(text, noise, e1)
        if stage == 1:
            return img1
        if stage is None and not bool(self.G2.active):
            return F.interpolate(img1, size=self.image_size, mode="nearest")
        return self.G2(img1, text, e2)[0]

    @torch.inference_mode()
    def sample(self, z: torch.Tensor | None = None, n: int | None = None, seed: int | None = 0,
               batch_size: int = 64, labels: Any = None, prompt: Any = None, stage: int | None = None,
               **gen_kwargs) -> torch.Tensor:
        """Images in [-1, 1] for ``prompt`` (text, or one per image); without one, training captions drawn by
        each latent (restricted to images with ``labels``). UnknownWordsError before anything is generated."""
        if stage not in (None, 1, 2):
            raise ValueError(f"stage must be 1 or 2, not {stage!r}")
        if z is None:
            if n is None:
                raise ValueError("sample() needs z or n")
            z = self.latent(n, seed)
        was_training = self.training
        self.eval()
        try:
            text = self.encode_prompts(self.prompts_for(z, labels, prompt))
        finally:
            self.train(was_training)
        return Engine.sample(self, z=z, batch_size=batch_size, text=text, stage=stage, **gen_kwargs)

    @torch.inference_mode()
    def interpolate(self, seed_a: int, seed_b: int, frames: int = 24, mode: str = "slerp", labels: Any = None,
                    prompt: Any = None, **gen_kwargs) -> torch.Tensor:
        """A latent walk with the caption held: the prompt, or the training caption drawn for ``seed_a``."""
        if prompt is None:
            prompt = self.prompts_for(self.latent(1, seed_a), labels)[0]
        elif labels is not None:
            raise LabelError("give a prompt or labels, not both")
        return Engine.interpolate(self, seed_a, seed_b, frames=frames, mode=mode, prompt=prompt, **gen_kwargs)

    @torch.inference_mode()
    def interpolate_prompts(self, seed: int, prompt_a: str, prompt_b: str, frames: int = 24,
                            stage: int | None = None) -> torch.Tensor:
        """A walk between two prompts at one latent (``seed``'s held): their sentence vectors mixed linearly, so
        both ends are exactly the prompts' own images."""
        if int(frames) < 2:
            raise ValueError("a walk between prompts needs at least 2 frames")
        ta, tb = self.encode_prompts([prompt_a, prompt_b])
        t = torch.linspace(0, 1, int(frames), device=ta.device).view(-1, 1)
        z = self.latent(1, seed).expand(int(frames), -1)
        return Engine.sample(self, z=z, text=ta + (tb - ta) * t, stage=stage)

    @torch.inference_mode()
    def interpolate_labels(self, seed: int, label_a: Any, label_b: Any, frames: int = 24,
                           **gen_kwargs) -> torch.Tensor:
        """Labels pick training captions here: the walk goes between the captions ``seed`` draws for each."""
        z = self.latent(1, seed)
        a, b = self.prompts_for(z, label_a)[0], self.prompts_for(z, label_b)[0]
        return self.interpolate_prompts(seed, a, b, frames, **gen_kwargs)

    def extra_grids(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        """Beside each sample grid: a row per label (ConditionalEngine) and Stage-I's images of the grid seeds."""
        grids = dict(super().extra_grids(real))
        grids["stage1"] = self.sample(n=16, seed=0, stage=1)
        return grids

    # ---- training ----------------------------------------------------------------------------------------------
    def train_step(self, batch) -> dict[str, torch.Tensor]:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError("stackgan trains on (images, caption rows) batches; give the trainer a labelled set "
                             "(--labels)")
        real, rows = batch
        b = real.size(0)
        if b < 2:
            raise ValueError("stackgan's matching-aware D pairs each image with the next one's caption: it needs "
                             "batches of at least 2 images")
        self._apply_phase()
        rows = rows.to(real.device).long()
        # one caption per image, drawn afresh every step from the trainer's checkpointed RNG (the reference's
        # random choice among an image's captions)
        pick = (torch.rand(b, device=real.device) * rows[:, 1]).long().clamp_max(rows[:, 1] - 1)
        idx = rows[:, 0] + pick
        c = self.config
        z = torch.randn(b, c["z_dim"], device=real.device)
        eps = torch.randn(b, c["cond_dim"], device=real.device)
        if self.phase == 1:
            g, d, reals = self.G1, self.D1, F.avg_pool2d(real, 2)  # Stage-I's reals: half size (box filter)
            with self.autocast():
                text = self._caption_vectors(idx)   # with gradients: D's loss trains the word encoder
                fake, mu, log_sigma = self.G1(text.detach(), z, eps)
        else:
            g, d, reals = self.G2, self.D2, real
            with torch.no_grad(), self.autocast():
                text = self._caption_vectors(idx)
                img1 = self.G1(text, z, torch.randn_like(eps))[0]
            with self.autocast():
                fake, mu, log_sigma = self.G2(img1, text, eps)
        g_name, d_name = ("G1", "D1") if g is self.G1 else ("G2", "D2")
        with self.autocast():
            out = discriminator_loss(d, self.augment_images(reals), self.augment_images(fake.detach()), text)
        self.optimize(d_name, out["loss"])
        self.augment_feedback(out["real_logit"])
        with frozen(d):
            with self.autocast():
                adv = generator_loss(d, self.augment_images(fake), text)
                kl = kl_loss(mu, log_sigma)
                loss_g = adv + float(c["kl_weight"]) * kl
            self.optimize(g_name, loss_g)
        return {"loss/D": out["loss"].detach(), "loss/G": adv.detach(), "loss/KL": kl.detach(),
                "loss/D_real": out["real"].detach(), "loss/D_wrong": out["wrong"].detach(),
                "loss/D_fake": out["fake"].detach(),
                "acc/D_real": (out["real_logit"] > 0).float().mean(),
                "acc/D_fake": (out["fake_logit"] < 0).float().mean(),
                "acc/D_wrong": (out["wrong_logit"] < 0).float().mean(),
                "stage": torch.tensor(float(self.phase), device=real.device)}

    # ---- export ------------------------------------------------------------------------------------------
    def export_modules(self) -> dict[str, nn.Module]:
        return {"text": self.text, "G1": self.G1, "G2": self.G2, "bank": self.bank}

    def export_extra(self) -> dict[str, Any]:
        extra = dict(super().export_extra())
        extra["supports"] = sorted(set(extra.get("supports", [])) | {"text"})
        c = self.config
        extra["text"] = {"encoder": c["text_encoder"], "clip_model": c["clip_model"],
                         "words": len(self.vocab) if self.vocab is not None else None,
                         "examples": list(dict.fromkeys(self.bank.texts))[:8] if len(self.bank) else [],
                         "stage": self.phase, "stage1_size": self.image_size // 2}
        return extra

    def run_info(self) -> dict[str, Any]:
        report = getattr(self, "caption_report", None)
        return {"captions": report, "caption_bank": list(self.config["caption_bank"])} if report else {}

