"""The About tab: every export's facts (engine, budget, FID/KID, collapse flag), review counts, SD's state,
and the same facts as JSON."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from . import PRIVATE as priv


def build(app) -> SimpleNamespace:
    with gr.Tab("About", id="about") as about_tab:
        a_md = gr.Markdown(app.about_markdown(), elem_id="about-md")
        with gr.Accordion("Export facts as JSON", open=False):
            gr.JSON(app.exports_info())

    about_tab.select(app.about_markdown, None, a_md, **priv)  # fresh review counts, SD state
    return SimpleNamespace(markdown=a_md)
