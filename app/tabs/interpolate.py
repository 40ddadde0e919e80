"""The Interpolate tab: a latent walk between two seeds (or, for conditional exports, between two labels),
as a frame strip, a GIF and optionally an MP4."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from .. import gan
from ..appconfig import LIMITS as L
from ..widgets import handle_errors as h, seed_box
from . import PRIVATE as priv
from .generate import generation_picker, picker_controls


def build(app) -> SimpleNamespace:
    p = generation_picker(app)
    first_entry, first_sup = p.first_entry, p.first_sup
    with gr.Tab("Interpolate", id="interpolate"):
        if not p.gens:
            gr.Markdown(app.empty_state(), elem_classes="pl-empty")
        with gr.Row(visible=bool(p.gens)):
            with gr.Column(scale=1, min_width=260):
                i_export, i_show, i_facts = picker_controls(app, p, "interp-export")
                with gr.Row():
                    i_a = seed_box(0, "Seed A")
                    i_b = seed_box(1, "Seed B")
                i_frames = gr.Slider(L.min_frames, L.max_frames, value=24, step=1, label="Frames")
                i_mode = gr.Radio(["slerp", "lerp"], value="lerp" if "w_space" in first_sup else "slerp",
                                  label="Path", info="slerp: along the Gaussian shell in Z; "
                                                     "for StyleGAN, lerp walks straight in W")
                i_psi = gr.Slider(L.min_psi, L.max_psi, value=0.7, step=0.05, label="Truncation ψ",
                                  info=f"{L.min_psi:g}–{L.max_psi:g} (values outside are set to the "
                                       "nearest end)", visible="truncation" in first_sup)
                # conditional exports: label A is held along a seed walk; with label B set the walk
                # goes from A to B at seed A's latent (the handler checks both against the vocabulary)
                first_vocab = first_entry.vocabulary if first_entry else []
                i_labels = gr.Dropdown(first_vocab, value=[], multiselect=True, allow_custom_value=True,
                                       label="Label A", info="held along the walk (none: seed A's own "
                                       "draw from the training mix)", visible=bool(first_vocab),
                                       elem_id="interp-labels")
                i_labels_to = gr.Dropdown(first_vocab, value=[], multiselect=True, allow_custom_value=True,
                                          label="Label B", info="set: walk from label A to label B at "
                                          "seed A (seed B unused)", visible=bool(first_vocab),
                                          elem_id="interp-labels-to")
                i_fps = gr.Slider(L.min_fps, L.max_fps, value=12, step=1, label="GIF frames/s")
                with gr.Row():
                    i_boom = gr.Checkbox(False, label="Play back and forth")
                    i_mp4 = gr.Checkbox(False, label="Also make an MP4", visible=gan.mp4_available())
                i_btn = gr.Button("Interpolate", variant="primary", elem_id="interp-btn")
            with gr.Column(scale=3):
                i_strip = gr.Image(label="Frames", elem_id="interp-strip", format="png", interactive=False,
                                   elem_classes="pl-pixel", buttons=["download", "fullscreen"])
                with gr.Row():
                    i_gif = gr.Image(label="Animation", elem_id="interp-gif", type="filepath", interactive=False,
                                     height=280, elem_classes="pl-pixel")
                    with gr.Column():
                        i_info = gr.Markdown(elem_id="interp-info")
                        i_files = gr.File(label="MP4", interactive=False, visible=False)

    i_export.change(h(app.on_interp_export_change), i_export,
                    [i_facts, i_psi, i_mode, i_labels, i_labels_to], **priv)
    i_mp4.change(lambda on: gr.update(visible=bool(on)), i_mp4, i_files, **priv)
    i_btn.click(h(app.interpolate), [i_export, i_a, i_b, i_frames, i_mode, i_psi, i_fps, i_boom, i_mp4,
                                     i_labels, i_labels_to],
                [i_strip, i_gif, i_files, i_info], api_name="interpolate")
    return SimpleNamespace(export=i_export, show=i_show, a=i_a, b=i_b)
