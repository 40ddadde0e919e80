"""The Translate tab: the user's picture through a translation export (either direction), with optional
rembg background removal, U-GAT-IT's attention maps, example inputs and the upscale panel."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from .. import translate as tr
from .. import upscale as upscale_ui
from ..widgets import (SHOW_COLLAPSED_INFO, engine_picture, export_picker, handle_errors as h,
                       picture_upload)
from . import PRIVATE as priv


def build(app) -> None:
    trans = app.catalog.translators()
    t_bad = len(app.catalog.collapsed("translate"))
    tkeys = app.picker_choices("translate")
    tfirst = app.catalog.entries.get(tkeys[0][1]) if tkeys else None
    trans_keys = lambda: {e.key for e in app.catalog.translators()}  # noqa: E731 - what a request may name
    show_info = SHOW_COLLAPSED_INFO
    rembg_choices = list(tr.REMBG_CHOICES)
    if app.cfg.rembg_model_path is not None:
        rembg_choices.insert(0, (f"model file {Path(app.cfg.rembg_model_path).name}", tr.CUSTOM_MODEL))
    with gr.Tab("Translate", id="translate"):
        if not trans:
            gr.Markdown(app.empty_state("translate"), elem_classes="pl-empty")
        with gr.Row(visible=bool(trans)):
            with gr.Column(scale=1, min_width=280):
                x_upload = picture_upload(label="Your picture", sources=["upload", "clipboard"], height=220,
                                          elem_id="tr-upload", elem_classes=["pl-pixel", "pl-fill"])
                x_export = export_picker(tkeys, tfirst.key if tfirst else None, trans_keys,
                                         label="Translation export", elem_id="tr-export")
                x_show = gr.Checkbox(False, label=f"Show collapsed exports ({t_bad})", info=show_info,
                                     visible=t_bad > 0)
                x_facts = gr.Markdown(app.export_summary(tfirst.key if tfirst else None, "translate"),
                                      elem_classes="pl-facts")
                x_dir = gr.Radio(app.direction_choices(tfirst), value="AB", label="Direction",
                                 visible=tfirst is not None and len(tfirst.directions) > 1)
                x_rembg = gr.Checkbox(False, label="Remove background (rembg)",
                                      info="cut the subject out first; pictures with their own "
                                           "transparency keep it")
                x_model = gr.Dropdown(rembg_choices, value=tr.CUSTOM_MODEL if app.cfg.rembg_model_path
                                      else tr.REMBG_CHOICES[0], label="rembg model",
                                      allow_custom_value=True, visible=False,
                                      info="a named model is downloaded by rembg on first use")
                x_btn = gr.Button("Translate", variant="primary", elem_id="tr-btn")
            with gr.Column(scale=3):
                with gr.Row(equal_height=True):
                    x_in = engine_picture("Engine input", "tr-input")
                    x_out = engine_picture("Output", "tr-output", download=True)
                    x_rec = engine_picture("Reconstruction", "tr-rec",
                                     visible=tfirst is not None and "BA" in tfirst.directions)
                with gr.Row(equal_height=True,
                            visible=tfirst is not None and tfirst.has_attention) as x_att_row:
                    x_att = engine_picture("Attention (CAM) on the input", "tr-attention")
                    x_map = engine_picture("Attention map", "tr-attention-map")
                x_info = gr.Markdown(elem_id="tr-info")
                x_file = gr.File(label="Output as PNG (the engine's size, lossless)", interactive=False,
                                 elem_id="tr-file")
        for name, files in app.examples:
            gr.Examples([[f] for f in files], inputs=[x_upload], label=f"Pictures of {name} (an input set)",
                        examples_per_page=len(files))
        upscale_ui.panel(app, "translate", [x_out], "translated")

    x_show.input(lambda show, key: app.picker_update("translate", show, key), [x_show, x_export], x_export,
                 **priv)
    x_export.change(h(app.on_trans_export_change), x_export,
                    [x_facts, x_dir, x_in, x_out, x_rec, x_att_row, x_att, x_map, x_file, x_info], **priv)
    x_rembg.change(lambda on: gr.update(visible=bool(on)), x_rembg, x_model, **priv)
    x_btn.click(h(app.translate), [x_upload, x_export, x_dir, x_rembg, x_model],
                [x_in, x_out, x_rec, x_att, x_map, x_file, x_info], api_name="translate")
