"""The app: ``PokelabApp`` holds the catalog and the handlers; the page is one module per tab (``app.tabs``:
Generate, Interpolate, Translate, Text-to-image, Review, About), put together in ``build()``.

Handlers are thin: they check nothing themselves beyond picking the export, call the UI-free modules
(``app.gan``, ``app.translate``, ``app.sd_pokemon``, ``app.review_book``) and turn user errors into
``gr.Error`` messages — except a rater's slip in the review (``ReviewNotice``: a question unanswered, a round
already saved), which is a ``gr.Warning`` with the pair kept on screen.
Every public endpoint has an ``api_name`` (see docs/app.md) so scripts and tests use the same paths.
"""
from __future__ import annotations

import atexit
import functools
import logging
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr
import numpy as np
import torch

from engines.review import ReviewDBError

from . import gan
from . import text_to_image as t2i
from . import translate as tr
from .appconfig import LIMITS, AppConfig
from .exports import ExportCatalog, ExportEntry, RealSet, public_path, public_source_id
from .inputs import AppInputError
from .review_book import (ReviewBook, ReviewNotice, ReviewSession, ReviewSource, TranslationGroup,
                          TranslationSource)
from .sd_pokemon import SDPokemon, SDUnavailable, overlay
from .tabs import PRIVATE
from .tabs import about as tab_about, generate as tab_generate, interpolate as tab_interpolate
from .tabs import review as tab_review, text_to_image as tab_text_to_image, translate as tab_translate
from .widgets import handle_errors

log = logging.getLogger("pokelab.app")

SD_REVIEW_PROMPT = "a cartoon drawing of a new pokemon, white background"

HEADER = """
<div class="pl-header">
  <h1>pokelab</h1>
  <p>GANs trained on a few hundred Pokémon: make new creatures, walk between them, turn your own
  pictures into Pokémon style, prompt a Stable Diffusion fine-tune and see where each word looks, then
  judge them blind.</p>
</div>
"""

CSS = """
.pl-header {padding: 6px 2px 2px 2px;}
.pl-header h1 {margin: 0; font-size: 1.9rem; letter-spacing: -0.02em;}
.pl-header p {margin: 4px 0 0 0; opacity: 0.8;}
.pl-pixel img {image-rendering: pixelated;}
.pl-empty {border: 1px dashed var(--border-color-primary); border-radius: 10px; padding: 14px 18px;}
.pl-facts {font-size: 0.88rem;}
.pl-review-img img {image-rendering: auto;}
.pl-fill img {width: 100%; height: 100%; object-fit: contain;}
/* sample grids: at most 128 px a tile (one image is not stretched over the whole width: Gradio lowers the
   column count to the image count), and captions wrap instead of cutting the seed or the distance off */
#gen-gallery .grid-container {grid-template-columns: repeat(auto-fill, minmax(96px, 128px));}
#gen-novelty .grid-container {grid-template-columns: repeat(auto-fill, minmax(180px, 256px));}
#gen-gallery .caption-label, #gen-novelty .caption-label {max-width: calc(100% - 8px); white-space: normal;
  overflow-wrap: anywhere; line-height: 1.2;}
/* About's table: the engine stays on one line, the rest wraps, and a narrow window scrolls instead of cutting */
#about-md table {display: block; overflow-x: auto; max-width: 100%;}
#about-md td:first-child, #about-md th {white-space: nowrap;}
footer {display: none !important;}
"""


def resolve_device(name: str) -> str:
    """'auto' -> cuda when present, else cpu; a device that cannot be used stops the start-up with a sentence."""
    name = (name or "cpu").strip()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise SystemExit(f"--device {name!r} is not a device torch knows ({e}); use cpu, cuda, cuda:N or auto")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name} was asked for but CUDA is not available here; use --device cpu")
    return name


def _hwc(images: torch.Tensor) -> list[np.ndarray]:
    return list(images.permute(0, 2, 3, 1).numpy())


class PokelabApp:
    def __init__(self, cfg: AppConfig):
        cfg.device = resolve_device(cfg.device)
        self.cfg = cfg
        self.catalog = ExportCatalog(cfg.checkpoint_roots(), device=cfg.device, data_dirs=cfg.data)
        self.sd = SDPokemon(cfg.sd_model, device=cfg.device)
        out_parent = Path(tempfile.gettempdir()) / "pokelab-app"
        remove_dead_output_dirs(out_parent)  # folders of app processes killed with -9
        self.out = gan.OutputDir(out_parent / str(os.getpid()))
        # at a normal exit (main() turns SIGTERM into one); the path only, so the app itself is not kept alive
        atexit.register(shutil.rmtree, str(self.out.root), True)
        self.sd_review = {"steps": 25, "guidance": 7.5, "size": 512}   # SD samples shown in the review
        self.review_notes: list[str] | None = None  # why translation rounds are off (set by review_translations)
        self.novelty_off: str | None = None  # why novelty lookups failed for good (Inception weights missing)
        self.book = ReviewBook(cfg.review_db, self.review_sources, translations=self.review_translations)
        self.examples = self.translation_examples()
        self.demo = self.build()

    # ---- review sources ---------------------------------------------------------------------------
    def review_sources(self) -> list[ReviewSource]:
        """Every generation export (collapsed ones marked: ``ReviewBook`` leaves them out of every pair), the
        training images behind the exports that are not collapsed, and SD with --sd-in-review."""
        out: list[ReviewSource] = []
        for e in self.catalog.generators():
            out.append(ReviewSource(e.source_id, "engine", e.label(), e.image_size,
                                    functools.partial(self._draw_engine, e.key), collapsed=e.collapsed))
        # one real source per training set behind the exports in the pool, loaded at the largest export size
        gens = [e for e in self.catalog.generators() if not e.collapsed]
        biggest = max((e.image_size for e in gens), default=0)
        seen: set[str] = set()
        for e in gens:
            name = str(e.dataset.get("name") or "")
            if not name or name in seen:
                continue
            seen.add(name)
            rs = self.catalog.real_set(e, size=biggest)
            if rs is not None and len(rs.images) > 0:
                out.append(ReviewSource(f"real:{rs.name}", "real", f"training images of {rs.name}", biggest,
                                        functools.partial(self._draw_real, rs)))
        if self.cfg.sd_in_review:
            try:
                self.sd.pipeline()  # loads once; a failure is remembered for a minute and SD is left out
                out.append(ReviewSource(f"sd-pokemon:{self.cfg.sd_model}", "sd",
                                        f"Stable Diffusion ({self.cfg.sd_model})", self.sd_review["size"],
                                        self._draw_sd))
            except SDUnavailable as e:
                log.warning("Stable Diffusion left out of the review: %s", e)
        return out

    def review_translations(self) -> list[TranslationGroup]:
        """Translation rounds: per input domain, the translation exports that take it, plus the target set's
        picture of the same file name as a paired reference. Groups with fewer than two sources, or whose
        input pictures are not on this machine, are left out and ``review_notes`` says why."""
        notes: list[str] = []
        by_input: dict[str, list[ExportEntry]] = {}
        for e in self.catalog.translators():
            name = str(e.source_dataset.get("name") or "")
            if not name:
                notes.append(f"{e.key}: the export does not record its input set")
                continue
            by_input.setdefault(name, []).append(e)
        groups = []
        for name, entries in by_input.items():
            size = max(e.image_size for e in entries)
            inputs, problem = None, ""
            for e in entries:
                inputs = self.catalog.real_set(e, size=size, role="source")
                if inputs is not None:
                    break
                problem = self.catalog.real_set_problem(e, size=size, role="source")
            if inputs is None or not inputs.files:
                notes.append(f"no translation rounds from {name}: {problem or 'its pictures have no file names'}")
                continue
            sources = [TranslationSource(e.source_id, "translate", e.label(), e.image_size,
                                         functools.partial(self._render_translation, e.key), collapsed=e.collapsed)
                       for e in entries]
            seen: set[str] = set()
            for e in entries:
                target = str(e.dataset.get("name") or "")
                if not target or target in seen:
                    continue
                seen.add(target)
                rs = self.catalog.real_set(e, size=size)
                index = {f: i for i, f in enumerate(rs.files)} if rs is not None else {}
                if any(f in index for f in inputs.files):
                    sources.append(TranslationSource(f"real:{rs.name}", "real", f"{rs.name}: the picture with the "
                                                     "input's file name", size,
                                                     functools.partial(self._render_paired, rs, index),
                                                     accepts=index.__contains__))
            if not any(not x.collapsed for x in sources if x.kind == "translate"):
                notes.append(f"no translation rounds from {name}: its translation exports are flagged collapsed")
                continue
            if len([x for x in sources if not x.collapsed]) < 2:
                alive = [e for e in entries if not e.collapsed]
                notes.append(f"no translation rounds from {name}: one translation export ({alive[0].key}) and "
                             "no target picture shares a file name with its inputs; a second translation export "
                             "of the same input set would make a pair")
                continue
            groups.append(TranslationGroup(name, inputs.images, inputs.files, sources))
        self.review_notes = notes
        return groups

    def _render_translation(self, key: str, picture: np.ndarray, file: str):
        eng = self.catalog.engine(key)
        size = int(eng.image_size)
        if picture.shape[0] != size:  # the group's inputs are loaded at its largest export size
            from PIL import Image

            picture = np.asarray(Image.fromarray(picture).resize((size, size), Image.Resampling.LANCZOS))
        return tr.translate_picture(eng, picture, "AB", extras=False).output, f"input:{file}"

    @staticmethod
    def _render_paired(rs: RealSet, index: dict[str, int], _picture: np.ndarray, file: str):
        return rs.images[index[file]].permute(1, 2, 0).numpy(), f"real:{file}"

    def translation_examples(self, per_set: int = 6) -> list[tuple[str, list[str]]]:
        """A few pictures of each translation export's input set, when it is a folder of images on this
        machine (listed, not decoded: start-up stays quick), spread over the set."""
        from engines.data.prepare import IMAGE_EXTENSIONS, natural_key

        out: list[tuple[str, list[str]]] = []
        seen: set[str] = set()
        for e in self.catalog.translators():
            name = str(e.source_dataset.get("name") or "")
            path = self.catalog.dataset_path(e, "source") if name else None
            if not name or name in seen or path is None or not path.is_dir():
                continue
            seen.add(name)
            try:
                files = sorted((f for f in path.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()),
                               key=lambda f: natural_key(f.name))
            except OSError:
                continue
            if files:
                step = max(1, len(files) // per_set)
                out.append((name, [str(f) for f in files[::step][:per_set]]))
        return out

    def _draw_engine(self, key: str, rng: random.Random):
        seed = rng.randrange(2**31)
        imgs, _ = gan.generate(self.catalog.engine(key), seed, 1)
        return _hwc(imgs)[0], f"seed:{seed}"

    @staticmethod
    def _draw_real(rs, rng: random.Random):
        i = rng.randrange(len(rs.images))
        return rs.images[i].permute(1, 2, 0).numpy(), f"real:{rs.item(i)}"

    def _draw_sd(self, rng: random.Random):
        seed = rng.randrange(2**31)
        kw = self.sd_review
        r = self.sd.text_to_image(SD_REVIEW_PROMPT, seed=seed, steps=kw["steps"], guidance=kw["guidance"],
                                  width=kw["size"], height=kw["size"], attention=False)
        return np.asarray(r.image.convert("RGB")), f"seed:{seed}"

    # ---- texts ----------------------------------------------------------------------------------
    def sd_status(self) -> str:
        return f"Model: `{self.cfg.sd_model}` — {self.sd.status()}"

    def export_summary(self, key: str | None, kind: str = "generate") -> str:
        if not key or key not in self.catalog.entries:
            return self.picker_note(kind)
        entry = self.catalog.entries[key]
        f = entry.facts()
        bits = [f"**{f['engine']}**", f"{f['image_size']} px"]
        if f["epochs"] is not None:
            bits.append(f"{f['epochs']} epochs")
        if entry.kind == "translate":
            a, b = entry.domain_names()
            bits.append(f"*{a}* → *{b}*")
            bits.append("both directions" if "BA" in entry.directions else "one direction")
            if entry.has_attention:
                bits.append("attention maps")
        else:
            if f["dataset"]:
                bits.append(f"on *{f['dataset']}*" + (f" ({f['images']} images)" if f["images"] else ""))
            if f["supports"]:
                bits.append("supports " + ", ".join(f["supports"]))
        return " · ".join(bits) + "  \n" + self.quality_line(entry)

    # ---- export pickers: collapsed exports only on request ----------------------------------------------
    def picker_choices(self, kind: str, show_collapsed: bool = False) -> list[tuple[str, str]]:
        """(label, key) of what a picker offers: exports not flagged collapsed, then, on request, the
        collapsed ones, last (``ExportCatalog.listed``)."""
        return [(e.label(), e.key) for e in self.catalog.listed(kind, bool(show_collapsed))]

    def picker_update(self, kind: str, show_collapsed: bool, current: str | None):
        """The picker after *Show collapsed exports* was (un)ticked: its choices, the current export kept
        when still listed, else the first listed (none when every export of the kind is collapsed)."""
        choices = self.picker_choices(kind, show_collapsed)
        keys = [k for _, k in choices]
        return gr.update(choices=choices, value=current if current in keys else (keys[0] if keys else None))

    def picker_note(self, kind: str = "generate") -> str:
        """Under a picker with nothing picked: why, when every export of the kind is flagged collapsed."""
        flagged = self.catalog.collapsed(kind)
        if flagged and not self.catalog.listed(kind):
            return (f"Every {'translation' if kind == 'translate' else 'generation'} export here "
                    f"({len(flagged)}) is flagged collapsed by its run's last evaluation. Tick *Show collapsed "
                    "exports* to pick one anyway.")
        return ""

    @staticmethod
    def quality_line(entry: ExportEntry) -> str:
        """The export's last evaluation in one line (under a picker): scores, epoch, collapse flag."""
        q = entry.quality
        if not q.evaluated:
            return f"Last evaluation: none — not evaluated ({q.problem})"
        at = f" at epoch {q.epoch}" if q.epoch is not None else ""
        line = f"Last evaluation{at}: {q.scores()}"
        if q.collapsed:
            return (line + " · **⚠ mode collapse flagged** — samples are far more alike than real images "
                    "(left out of the review and of the default list)")
        return line + (f" · {q.collapse_text()}" if q.collapse_text() else "")

    def empty_state(self, kind: str = "generate") -> str:
        roots = "\n".join(f"- `{r}`" for r in self.catalog.roots) or "- (none)"
        probs = "".join(f"\n- {p}" for p in self.catalog.problems[:8])
        if kind == "translate":
            head, what, train = ("No translation exports found" if self.catalog.entries else "No engine exports found",
                                 "Nothing to translate with yet",
                                 "`pokelab train cyclegan --source DIR_A --target DIR_B`")
        else:
            head, what, train = ("No generation exports found" if self.catalog.entries else "No engine exports found",
                                 "Nothing to sample from yet", "`pokelab train dcgan --data DATA`")
        return (f"### {head}\n"
                f"{what}. Train an engine ({train}) or copy an "
                "export folder (config.json + model.safetensors), then start the app with "
                "`--checkpoints DIR`. Looked in:\n" + roots
                + (f"\n\nCould not read:{probs}" if probs else ""))

    def about_markdown(self) -> str:
        entries = list(self.catalog.entries.values())
        lines = ["### Loaded exports"]
        if not entries:
            lines.append("None found — see the Generate tab for how to add one.")
        else:
            lines += ["| Engine | Export | Image | Epochs | Trained on | Last evaluation | Collapse | Trained with |",
                      "|---|---|---|---|---|---|---|---|"]
            for e in entries:
                f = e.facts()
                ds = (f["dataset"] or "?") + (f" ({f['images']} images)" if f["images"] else "")
                if e.kind == "translate":
                    ds = " → ".join(e.domain_names())
                how = []
                if f["batch_size"]:
                    how.append(f"batch {f['batch_size']}")
                if f["lr"] is not None:
                    how.append(f"lr {f['lr']}")
                if f["z_dim"] is not None:
                    how.append(f"z {f['z_dim']}")
                if f["device"]:
                    how.append(str(f["device"]))
                if f["run_id"]:
                    how.append(f"run `{f['run_id']}`")
                kind = "" if e.kind == "generate" else f" ({e.kind})"
                q = e.quality
                if q.evaluated:
                    ev = q.scores() + (f"<br><small>at epoch {q.epoch} (the last of {q.evaluations})</small>"
                                       if q.epoch is not None else "")
                else:
                    ev = f"not evaluated<br><small>{q.problem}</small>"
                col = q.collapse_text(detail=True) or ("not measured" if q.evaluated else "—")
                if q.collapsed:
                    col = f"**{col}**"
                lines.append(f"| **{f['engine']}**{kind} | {e.key}<br><small>`{f['folder']}`</small> "
                             f"| {f['image_size']} px | {f['epochs'] if f['epochs'] is not None else '?'} | {ds} "
                             f"| {ev} | {col} | {', '.join(how) or '—'} |")
            flagged = self.catalog.collapsed()
            if flagged:
                lines += ["", f"{len(flagged)} export(s) flagged collapsed by their run's last evaluation "
                          f"({', '.join(e.engine_name + ' ' + e.key for e in flagged)}): not in the default "
                          "export lists (tick *Show collapsed exports*) and never in the blind review."]
        if self.catalog.problems:
            lines += ["", "Could not read: " + "; ".join(self.catalog.problems[:8])]
        try:
            st = self.review_stats()
            rev = f"{st['answers']} answers from {st['raters']} rater(s) in `{st['db']}`"
        except ReviewDBError as e:
            rev = f"review database unreadable: {e}"
        lines += ["", "### Also here",
                  f"- **Text-to-image:** `{self.cfg.sd_model}` — {self.sd.status()}",
                  f"- **Blind review:** {rev}"
                  + (f" · {self.review_note_text()}" if self.catalog.translators() else ""),
                  f"- **Device:** `{self.cfg.device}` · novelty lookups "
                  + ("on (engines.metrics, Inception pool3 nearest neighbour)" if self.cfg.novelty else "off"),
                  "", "Sampling is seeded: image *i* of a grid started at seed *s* is the image of seed *s + i*, "
                  "on any device. Metrics, run logs and review results are in the studio (`streamlit run studio`)."]
        return "\n".join(lines)

    # ---- handlers: generate / interpolate ---------------------------------------------------------------
    def _psi(self, entry: ExportEntry, psi):
        return psi if "truncation" in entry.supports else None

    def generate(self, key, seed, count, psi, novelty, labels=None, progress=gr.Progress()):
        entry = self.catalog.generator(key)
        eng = self.catalog.engine(entry.key)  # a grid takes milliseconds: progress only for novelty
        imgs, seeds = gan.generate(eng, seed, count, self._psi(entry, psi), labels)
        grid = gan.write_grid(imgs, seeds, self.out.new(), entry.key)
        files = gan.write_pngs(_hwc(imgs), self.out.new(), [f"seed-{s}" for s in seeds])
        # conditional exports: each caption names the image's labels (chosen, or drawn by its seed)
        rows = gan.label_rows(eng, labels, seeds)
        names = eng.label_spec.decode(rows) if rows is not None else [""] * len(seeds)
        gallery = [(f, f"seed {s}" + (f" · {n}" if n else "")) for f, s, n in zip(files, seeds, names)]
        pairs, summary = [], ""
        if novelty:
            if not self.cfg.novelty:
                raise AppInputError("novelty lookups are switched off on this server")
            pairs, summary = self._novelty(entry, imgs, seeds, progress)
        hint = f"{len(seeds)} image(s), seeds {seeds[0]}–{seeds[-1]}" if len(seeds) > 1 else f"seed {seeds[0]}"
        if len(seeds) == LIMITS.max_count:
            hint += f" ({LIMITS.max_count} is the most per grid)"
        return gallery, grid, seeds, pairs, summary, f"{hint}. Click an image to use it as an interpolation end point."

    def _novelty(self, entry: ExportEntry, imgs, seeds, progress):
        """Nearest training images, or ([], one line saying why not). The grid is shown either way. When the
        Inception weights (or the metrics) cannot be loaded, that is remembered for the process: no lookup
        tries to download them again until the app restarts."""
        if self.novelty_off is not None:
            return [], self.novelty_off
        rs = self.catalog.real_set(entry)
        if rs is None:
            return [], f"Novelty is not available for {entry.key}: {self.catalog.real_set_problem(entry)}."
        from engines.metrics import MetricUnavailable

        progress(0.3, desc=f"finding the nearest training images (the first lookup for {rs.name} computes the "
                           f"Inception features of its {len(rs.images)} images: minutes on a CPU)")
        try:
            return gan.novelty_pairs(imgs, seeds, rs, device=self.cfg.device)
        except (ImportError, MetricUnavailable) as e:
            log.warning("novelty lookups are off until the app restarts: %s", e)
            self.novelty_off = ("Novelty is not available on this server: the Inception network's weights could "
                                "not be loaded (pt_inception-2015-12-05-6726825d.pth under $TORCH_HOME/hub/"
                                "checkpoints/); restart the app once they are there."
                                if isinstance(e, MetricUnavailable) else
                                f"Novelty is not available on this server (the metrics could not be imported: "
                                f"{type(e).__name__}).")
            return [], self.novelty_off
        except Exception as e:  # noqa: BLE001 - the grid is made; a failed lookup must not take it away
            log.exception("novelty lookup failed for %s", entry.key)
            return [], f"Novelty lookup failed ({type(e).__name__}: {str(e)[:160]}); the grid is above."

    def interpolate(self, key, seed_a, seed_b, frames, mode, psi, fps, boomerang, mp4=False, labels=None,
                    labels_to=None):
        entry = self.catalog.generator(key)
        eng = self.catalog.engine(entry.key)
        a, b = gan.check_seed(seed_a, "seed A"), gan.check_seed(seed_b, "seed B")
        x = gan.interpolate(eng, a, b, frames, mode, self._psi(entry, psi), labels, labels_to)
        # conditional exports: label B set = a walk between labels at seed A's latent
        combo_a, combo_b = gan.label_combo(eng, labels), gan.label_combo(eng, labels_to)
        name = f"{entry.key}-{a}-{combo_a}-to-{combo_b}" if combo_b else f"{entry.key}-{a}-to-{b}-{mode}"
        gif, video = gan.write_animation(x, self.out.new(), name.replace("|", "+"), fps, bool(boomerang),
                                         mp4=bool(mp4))
        if combo_b:
            how = "straight in W" if "w_space" in entry.supports and mode == "lerp" else "label mix"
            info = (f"{len(x)} frames, {how}, from {combo_a} to {combo_b} at seed {a} "
                    f"({entry.image_size} px).")
            return gan.strip(x), gif, video, info
        if "w_space" in entry.supports:
            how = "linear in W" if mode == "lerp" else "spherical in Z, mapped to W"
        else:
            how = f"{mode} in Z"
        held = f", label {combo_a}" if combo_a else ""
        info = f"{len(x)} frames, {how}, from seed {a} to seed {b}{held} ({entry.image_size} px)."
        return gan.strip(x), gif, video, info

    def on_export_change(self, key):
        sup = self.catalog.entries[key].supports if key and key in self.catalog.entries else set()
        return self.export_summary(key), gr.update(visible="truncation" in sup)

    def on_gen_export_change(self, key):
        facts, psi = self.on_export_change(key)
        entry = self.catalog.entries.get(key)
        n = int((entry.config.get("extra") or {}).get("num_ws") or 1) if entry else 1
        mix = "style_mixing" in (entry.supports if entry else set())
        vocab = entry.vocabulary if entry else []  # the label picker: conditional exports only
        return (facts, psi, gr.update(visible=mix), gr.update(value=max(1, n // 2)),
                gr.update(choices=vocab, value=[], visible=bool(vocab)))

    def on_interp_export_change(self, key):
        facts, psi = self.on_export_change(key)
        entry = self.catalog.entries.get(key)
        w = entry is not None and "w_space" in entry.supports
        vocab = entry.vocabulary if entry else []  # the label pickers: conditional exports only
        pick = gr.update(choices=vocab, value=[], visible=bool(vocab))
        return facts, psi, gr.update(value="lerp" if w else "slerp"), pick, pick

    def style_mix(self, key, row_seeds, col_seeds, crossover, psi):
        entry = self.catalog.generator(key)
        return gan.style_mix(self.catalog.engine(entry.key), row_seeds, col_seeds, crossover, self._psi(entry, psi))

    # ---- handlers: translate ----------------------------------------------------------------------------------
    def direction_choices(self, entry: ExportEntry | None) -> list[tuple[str, str]]:
        """Both values always (the API may pick any export); the labels name the export's domains."""
        a, b = entry.domain_names() if entry is not None else ("A", "B")
        return [(f"{a} → {b}", "AB"), (f"{b} → {a}", "BA")]

    def translate(self, upload, key, direction, remove_bg, rembg_model, progress=gr.Progress()):
        entry = self.catalog.translator(key)
        eng = self.catalog.engine(entry.key)
        session = None
        if remove_bg:
            # made on the first prediction only: a picture with its own transparency never needs the model
            session = tr.LazyRembg(rembg_model, self.cfg.rembg_model_path)
            progress(0.1, desc="background removal (the first use of a named model loads it)")
        t0 = time.perf_counter()
        res = tr.translate_upload(eng, upload, direction, tr.input_background(entry), session)
        ms = (time.perf_counter() - t0) * 1000
        stem = Path(str(upload)).stem if isinstance(upload, (str, os.PathLike)) else "upload"
        f = tr.write_pngs(res, self.out.new(), f"{entry.key}-{stem}")
        info = f"**{entry.engine_name}** ({entry.trained.get('epochs', '?')} epochs) · {tr.describe(res, entry, ms)}"
        return (f["input"], f["output"], f["reconstruction"], f["attention"], f["attention_map"], f["output"], info)

    def on_trans_export_change(self, key):
        entry = self.catalog.entries.get(key)
        dirs = entry.directions if entry is not None else ()
        att = entry is not None and entry.has_attention
        return (self.export_summary(key, "translate"),
                gr.update(choices=self.direction_choices(entry), value="AB", visible=len(dirs) > 1),
                gr.update(value=None), gr.update(value=None),
                gr.update(value=None, visible="BA" in dirs), gr.update(visible=att),
                gr.update(value=None), gr.update(value=None), gr.update(value=None), "")

    # ---- handlers: text-to-image ---------------------------------------------------------------------------
    def _sd_progress(self, progress):
        def cb(i, n):
            progress((i, n), desc="denoising", unit="steps")
        return cb

    def txt2img(self, prompt, negative, steps, guidance, seed, width, height, attention, progress=gr.Progress()):
        progress(0, desc=self.sd.load_note if not self.sd.loaded else "starting")
        r = self.sd.text_to_image(prompt, negative, steps, guidance, seed, width, height, bool(attention),
                                  on_step=self._sd_progress(progress))
        maps = []
        if r.maps is not None:
            maps = [(overlay(r.image, m), f"{i + 1}: {tok}") for i, (m, tok) in enumerate(zip(r.maps, r.tokens))]
        info = f"seed {r.seed} · {int(steps)} steps · guidance {float(guidance):g} · {r.image.width}×{r.image.height}"
        if r.maps is not None:
            info += f" · attention of {len(r.tokens)} token(s), averaged over steps, layers and heads"
        if r.truncated:
            info += " · the prompt was cut to the text encoder's length"
        return r.image, maps, info, self.sd_status()

    def _frames_out(self, pics, stem, fps):
        arr = np.stack([np.asarray(p.convert("RGB")) for p in pics])
        x = torch.from_numpy(arr).permute(0, 3, 1, 2)
        small = torch.nn.functional.interpolate(x.float(), size=(128, 128 * x.shape[3] // x.shape[2]),
                                                mode="bilinear", antialias=True, align_corners=False)
        gif, _ = gan.write_animation(x, self.out.new(), stem, fps)
        return gan.strip(small.round().clamp(0, 255).to(torch.uint8), per_row=8), gif

    def sd_interp_seeds(self, prompt, negative, steps, guidance, seed_a, seed_b, frames, width, height, fps,
                        progress=gr.Progress()):
        pics = self.sd.interpolate_seeds(prompt, seed_a, seed_b, frames, negative, steps, guidance, width, height,
                                         on_step=self._sd_progress(progress))
        strip, gif = self._frames_out(pics, f"sd-seeds-{int(seed_a)}-{int(seed_b)}", fps)
        return strip, gif, self.sd_status()

    def sd_interp_prompts(self, prompt, prompt_b, negative, steps, guidance, seed, frames, width, height, fps,
                          progress=gr.Progress()):
        pics = self.sd.interpolate_prompts(prompt, prompt_b, seed, frames, negative, steps, guidance, width, height,
                                           on_step=self._sd_progress(progress))
        strip, gif = self._frames_out(pics, f"sd-prompts-seed{int(seed)}", fps)
        return strip, gif, self.sd_status()

    # ---- text-to-image with GAN exports (stackgan) beside SD: app/text_to_image.py ------------------------------
    def t2i_choices(self) -> list[tuple[str, str]]:
        """The Text-to-image tab's engine picker: Stable Diffusion, then every export that takes a prompt."""
        return [(f"Stable Diffusion ({self.cfg.sd_model})", "sd")] + [
            (e.label(), f"export:{e.key}") for e in t2i.text_exports(self.catalog)]

    def _text_entry(self, key) -> ExportEntry:
        key = str(key or "")
        entry = self.catalog.generator(key[len("export:"):] if key.startswith("export:") else key)
        if "text" not in entry.supports:
            raise AppInputError(f"{entry.key} ({entry.engine_name}) does not take a prompt; text-to-image "
                                f"exports: {', '.join(e.key for e in t2i.text_exports(self.catalog)) or 'none'}")
        return entry

    def text_to_image_gan(self, key, prompt, seed, count):
        """A grid of ``count`` images for the prompt from a text-to-image export (Stage-I above Stage-II)."""
        entry = self._text_entry(key)
        r = t2i.generate(self.catalog.engine(entry.key), prompt, seed, count)
        return t2i.picture(r), t2i.info(r, entry.key, entry.image_size)

    def on_t2i_engine_change(self, key):
        """SD's controls for SD; the image count, the export's facts and its own button for a GAN export."""
        sd = not key or key == "sd"
        facts = "" if sd else t2i.facts(self._text_entry(key)) + "  \n" + self.quality_line(self._text_entry(key))
        show, hide_sd = gr.update(visible=not sd), gr.update(visible=sd)
        return (gr.update(value=facts, visible=not sd), show, show, *[hide_sd] * 10)

    # ---- handlers: review ---------------------------------------------------------------------------------
    def _review_view(self, s: ReviewSession, keep: tuple = (None, None, None), notice: str = ""):
        """(session, left, right, progress, pokemon, novel, panel, input, faithful) as plain values, so API
        callers get pictures and None, not component updates; ``review_layout`` then shows the input and
        the 'faithful' question instead of 'novel' in a translation round. ``keep``: the answers to show
        (a pair that stays on screen keeps what the rater chose); ``notice``: why nothing was stored."""
        p = s.current
        progress = f"**{s.rater}** · pair {p.round} · {s.answers} answer(s) saved this session"
        if p.kind == "translate":
            progress += " · both pictures are made from the input on the left"
        if notice:
            progress += f"  \n⚠ {notice}"
        # files, not arrays (see gan.write_pngs); neutral names, so nothing in a URL tells the sources apart
        pics = [x for x in (p.left_image, p.right_image, p.input_image) if x is not None]
        files = gan.write_pngs(pics, self.out.new(), ["left", "right", "input"][:len(pics)])
        left, right = files[0], files[1]
        inp = files[2] if p.input_image is not None else None
        pokemon, novel, faithful = keep
        return (s, left, right, progress, pokemon, novel, gr.update(visible=True), inp, faithful)

    def review_layout(self, s: ReviewSession | None):
        """Which question and whether the input picture show for the round on screen, the notes, and the
        round number the page sends back with its answers (a page-only event)."""
        tr_round = s is not None and s.current is not None and s.current.kind == "translate"
        return (gr.update(visible=not tr_round), gr.update(visible=tr_round), gr.update(visible=tr_round),
                self.review_note_md(), str(s.current.round) if s is not None and s.current is not None else "")

    def review_note_text(self) -> str:
        if self.review_notes is None:
            return "translation rounds: decided when a review starts"
        if not self.review_notes:
            return "translation rounds: on"
        return "translation rounds: " + "; ".join(self.review_notes)

    def review_note_md(self) -> str:
        """Shown under the Review intro once a session started: when translation rounds are (partly) off, and
        the sources that left the review because their pictures could not be made."""
        parts = []
        if self.review_notes:
            text = self.review_note_text()
            parts.append(f"*{text[0].upper()}{text[1:]}.*")
        broken = self.book.notes()
        if broken:
            parts.append("*Left out of the review because their pictures could not be made: "
                         + "; ".join(broken) + ".*")
        return "\n\n".join(parts)

    def review_start(self, rater, _session):
        return self._review_view(self.book.start(rater))

    def review_answer(self, pokemon, novel, session, faithful=None, round_id=None):
        """Store the answers to the round on screen (``round_id``: the round the page shows, sent back by the
        page; API callers may leave it out) once, then show the next pair."""
        self.book.submit(session, {"pokemon": pokemon, "novel": novel, "faithful": faithful}, round_id=round_id)
        return self._review_view(session)

    # the page's review events: a rater's slip (no name, a question unanswered, a round already saved) is a
    # warning and the pair stays on screen; only a failed action (no pair can be drawn, the database cannot
    # be written) is an error
    def review_start_page(self, rater, session):
        try:
            return self.review_start(rater, session)
        except ReviewNotice as e:
            gr.Warning(str(e))
            if session is not None and session.current is not None:
                return self._review_view(session, notice=str(e))
            return (session, None, None, f"⚠ {e}", None, None, gr.update(), None, None)

    def review_answer_page(self, pokemon, novel, session, faithful=None, round_id=None):
        try:
            return self.review_answer(pokemon, novel, session, faithful, round_id)
        except ReviewNotice as e:
            gr.Warning(str(e))
            same = round_id in (None, "") or str(round_id) == str(session.current.round)
            return self._review_view(session, keep=(pokemon, novel, faithful) if same else (None, None, None),
                                     notice=str(e))

    def review_skip(self, session):
        if session is None:
            raise AppInputError("Enter your name and press Start first.")
        self.book.next_pair(session)
        return self._review_view(session)

    # ---- layout -----------------------------------------------------------------------------------------
    def build(self) -> gr.Blocks:
        """The page: one module per tab (``app.tabs``); here only what crosses tabs."""
        with gr.Blocks(title="pokelab", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
            gr.HTML(HEADER)
            with gr.Tabs() as tabs:
                gen = tab_generate.build(self)
                interp = tab_interpolate.build(self)
                tab_translate.build(self)
                t2i_tab = tab_text_to_image.build(self)
                tab_review.build(self)
                about = tab_about.build(self)
            priv = PRIVATE

            # one choice for both generation pickers: ticking either box lists the collapsed exports in both
            def show_gen(show, g_key, i_key):
                return (self.picker_update("generate", show, g_key), self.picker_update("generate", show, i_key),
                        bool(show))

            gen.show.input(show_gen, [gen.show, gen.export, interp.export], [gen.export, interp.export, interp.show],
                           **priv)
            interp.show.input(show_gen, [interp.show, gen.export, interp.export],
                              [gen.export, interp.export, gen.show], **priv)

            def use_as(which):  # a sample clicked in Generate starts (A) or ends (B) an interpolation
                def fn(key, sel, a, b):
                    if sel is None:
                        raise gr.Error("Click an image in the grid first.", print_exception=False)
                    a, b = (sel, b) if which == "a" else (a, sel)
                    return key, a, b, gr.Tabs(selected="interpolate")
                return fn

            for button, which in ((gen.to_a, "a"), (gen.to_b, "b")):
                button.click(use_as(which), [gen.export, gen.selected, interp.a, interp.b],
                             [interp.export, interp.a, interp.b, tabs], **priv)
            demo.load(lambda: (self.about_markdown(), self.sd_status()), None, [about.markdown, t2i_tab.status],
                      **priv)
            gr.api(self.exports_info, api_name="exports")
            gr.api(handle_errors(self.review_stats), api_name="review_stats")
        return demo

    # ---- API-only ---------------------------------------------------------------------------------------
    def exports_info(self) -> list[dict]:
        """Every export the app serves with its training facts (the About table as data)."""
        return [dict(e.facts(), key=e.key, kind=e.kind) for e in self.catalog.entries.values()]

    def review_stats(self) -> dict:
        """Counts from the review database (answers, raters, sessions, per question). Paths are named as the
        app names them to the outside (``app.exports.public_path``), never absolutely."""
        st = dict(self.book.stats())
        roots = self.catalog.roots
        st["db"] = public_path(st["db"], roots)
        st["sources"] = [public_source_id(x, roots) for x in st["sources"]]
        return st

    # ---- running ----------------------------------------------------------------------------------------
    def launch(self, **kw):
        self.demo.queue(default_concurrency_limit=self.cfg.concurrency, max_size=self.cfg.max_queue)
        theme = gr.themes.Soft(primary_hue="red", secondary_hue="amber", neutral_hue="slate",
                               font=["ui-sans-serif", "system-ui", "sans-serif"],
                               font_mono=["ui-monospace", "Consolas", "monospace"])
        examples = [f for _, files in self.examples for f in files]  # those files only, not their folders
        opts = dict(server_name=self.cfg.host, server_port=self.cfg.port, share=self.cfg.share, show_error=True,
                    theme=theme, css=CSS, allowed_paths=[str(self.out.root), *examples], footer_links=[],
                    max_file_size=LIMITS.max_upload_bytes)
        opts.update(kw)
        return self.demo.launch(**opts)

    def close(self):
        try:
            self.demo.close()
        finally:
            self.remove_output_dir()

    def remove_output_dir(self) -> None:
        """Remove this process's folder of handed-out files (at close, at exit, on SIGTERM through main())."""
        shutil.rmtree(self.out.root, ignore_errors=True)


def remove_dead_output_dirs(parent: Path, min_age_s: float = 3600) -> list[Path]:
    """Remove ``parent/<pid>`` folders whose app process is gone (kill -9 leaves them behind) and that were not
    touched for ``min_age_s`` (the age after which an app sweeps its own files: a live app in another PID
    namespace sharing the temp folder loses nothing it would have kept)."""
    removed = []
    now = time.time()
    try:
        kids = list(parent.iterdir())
    except OSError:
        return removed
    for d in kids:
        if not d.name.isdigit() or int(d.name) == os.getpid() or d.is_symlink() or not d.is_dir():
            continue
        try:
            if now - d.stat().st_mtime < min_age_s:
                continue
        except OSError:
            continue
        try:
            os.kill(int(d.name), 0)
            continue                     # alive
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError, ValueError):
            continue                     # someone else's process, or not a PID
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed

