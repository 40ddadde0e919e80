"""The Generate tab: a grid of samples from a generation export (seeds, count, truncation, labels for
conditional exports), style mixing for StyleGAN2, nearest training images, and the grid's upscale panel.
A clicked sample can start an interpolation (wired in ``app.ui``: it switches tabs)."""
from __future__ import annotations

import random
from types import SimpleNamespace

import gradio as gr

from .. import upscale as upscale_ui
from ..appconfig import LIMITS as L
from ..widgets import NOVELTY_COST, SHOW_COLLAPSED_INFO, export_picker, handle_errors as h, seed_box
from . import PRIVATE as priv


def generation_picker(app) -> SimpleNamespace:
    """What the Generate and Interpolate pickers open with: the default list leaves collapsed exports out."""
    gens = app.catalog.generators()  # all of them: the tabs show when there is any
    keys = app.picker_choices("generate")
    first = keys[0][1] if keys else None
    first_entry = app.catalog.entries.get(first) if first else None
    return SimpleNamespace(gens=gens, n_bad=len(app.catalog.collapsed("generate")), keys=keys, first=first,
                           first_entry=first_entry, first_sup=first_entry.supports if first_entry else set(),
                           valid=lambda: {e.key for e in app.catalog.generators()})  # what a request may name


def picker_controls(app, p: SimpleNamespace, export_id: str, show_id: str | None = None):
    """The top of Generate and Interpolate: the export picker, the "show collapsed" box, the export's facts."""
    export = export_picker(p.keys, p.first, p.valid, label="Engine export", elem_id=export_id)
    show = gr.Checkbox(False, label=f"Show collapsed exports ({p.n_bad})", info=SHOW_COLLAPSED_INFO,
                       visible=p.n_bad > 0, elem_id=show_id)
    return export, show, gr.Markdown(app.export_summary(p.first), elem_classes="pl-facts")


def build(app) -> SimpleNamespace:
    p = generation_picker(app)
    gens, first_entry, first_sup = p.gens, p.first_entry, p.first_sup
    with gr.Tab("Generate", id="generate"):
        if not gens:
            gr.Markdown(app.empty_state(), elem_classes="pl-empty")
        with gr.Row(visible=bool(gens)):
            with gr.Column(scale=1, min_width=260):
                g_export, g_show, g_facts = picker_controls(app, p, "gen-export", "gen-show-collapsed")
                with gr.Row():
                    g_seed = seed_box(0, "Seed")
                    g_dice = gr.Button("Random", scale=0, min_width=80)
                g_count = gr.Slider(L.min_count, L.max_count, value=16, step=1, label="Images",
                                    info=f"{L.min_count}–{L.max_count}; a larger number typed in "
                                         f"becomes {L.max_count}", elem_id="gen-count")
                g_psi = gr.Slider(L.min_psi, L.max_psi, value=0.7, step=0.05, label="Truncation ψ",
                                  info=f"{L.min_psi:g}–{L.max_psi:g} (values outside are set to the "
                                       "nearest end); lower = more typical, less varied",
                                  visible="truncation" in first_sup)
                # conditional exports (cgan): the labels of every image; the handler checks them
                # against the export's vocabulary (an API caller may name any export)
                g_labels = gr.Dropdown(first_entry.vocabulary if first_entry else [], value=[],
                                       multiselect=True, allow_custom_value=True, label="Labels",
                                       info="every image gets these (two: a dual type); none: each "
                                            "image's own draw from the training mix",
                                       visible=bool(first_entry and first_entry.vocabulary),
                                       elem_id="gen-labels")
                g_nov = gr.Checkbox(False, label="Nearest training image (novelty)",
                                    info=NOVELTY_COST, visible=app.cfg.novelty)
                g_btn = gr.Button("Generate", variant="primary", elem_id="gen-btn")
            with gr.Column(scale=3):
                g_gallery = gr.Gallery(label="Samples", elem_id="gen-gallery", columns=8, height="auto", format="png",
                                       object_fit="contain", elem_classes="pl-pixel",
                                       buttons=["download", "download_all", "fullscreen"],
                                       interactive=False)
                with gr.Row():
                    g_sel = gr.Markdown("Generate a grid, then click an image to interpolate from it.")
                    g_to_a = gr.Button("Use as interpolation start (A)", size="sm", elem_id="gen-to-a")
                    g_to_b = gr.Button("Use as end (B)", size="sm")
                g_files = gr.File(label="Grid as one PNG (single images: the gallery's download buttons)",
                                  interactive=False)
                first_mix = first_entry.config.get("extra", {}) if first_entry else {}
                with gr.Accordion("Style mixing (StyleGAN2)", open=False,
                                  visible="style_mixing" in first_sup) as g_mix_box:
                    gr.Markdown("Each cell takes the coarse styles (pose, shape) of its row's seed and "
                                "the fine styles (colours, texture) of its column's seed.")
                    with gr.Row():
                        g_rows = gr.Textbox("1, 2, 3", label="Row seeds (coarse)", max_length=80)
                        g_cols = gr.Textbox("10-14", label="Column seeds (fine)", max_length=80)
                        # the slider's bound is the largest style count of any export (checked per
                        # export in app.gan.style_mix); the API validates against this bound
                        most_ws = max([int((e.config.get("extra") or {}).get("num_ws") or 1)
                                       for e in gens] or [1])
                        n_ws = int(first_mix.get("num_ws") or 1)
                        g_cross = gr.Slider(0, most_ws, value=max(1, n_ws // 2), step=1,
                                            label="Crossover (style inputs from the row)")
                    g_mix_btn = gr.Button("Mix styles")
                    g_mix_img = gr.Image(label="Style mixing", format="png", interactive=False,
                                         elem_classes="pl-pixel", buttons=["download", "fullscreen"])
                g_nov_md = gr.Markdown()
                g_nov_gallery = gr.Gallery(label="Sample | nearest training image", columns=4,
                                           height="auto", format="png", visible=False,
                                           object_fit="contain", elem_id="gen-novelty",
                                           elem_classes="pl-pixel", interactive=False)
        g_seeds = gr.State([])
        g_selected = gr.State(None)
        upscale_ui.panel(app, "generate", [g_gallery, g_seeds, g_selected], "generated")

    g_export.change(h(app.on_gen_export_change), g_export, [g_facts, g_psi, g_mix_box, g_cross, g_labels],
                    **priv)
    g_mix_btn.click(h(app.style_mix), [g_export, g_rows, g_cols, g_cross, g_psi], g_mix_img,
                    api_name="style_mix")
    g_dice.click(lambda: random.randrange(2**31), None, g_seed, **priv)
    g_nov.change(lambda on: (gr.update(visible=bool(on)), ""), g_nov, [g_nov_gallery, g_nov_md], **priv)
    g_btn.click(h(app.generate), [g_export, g_seed, g_count, g_psi, g_nov, g_labels],
                [g_gallery, g_files, g_seeds, g_nov_gallery, g_nov_md, g_sel], api_name="generate")

    def on_select(seeds, evt: gr.SelectData):
        s = seeds[evt.index] if seeds and evt.index is not None and evt.index < len(seeds) else None
        return s, (f"Selected: **seed {s}**" if s is not None else "")

    g_gallery.select(on_select, g_seeds, [g_selected, g_sel], **priv)
    return SimpleNamespace(export=g_export, show=g_show, selected=g_selected, to_a=g_to_a, to_b=g_to_b)
