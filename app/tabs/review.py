"""The Review tab: blind pairwise judgement of two hidden sources (engines, SD, real art; translation rounds
show their input first), stored per rater (``app.review_book``)."""
from __future__ import annotations

import gradio as gr

from engines.review import QUESTIONS

from .. import upscale as upscale_ui
from ..appconfig import LIMITS as L
from ..widgets import handle_errors as h
from . import PRIVATE as priv

ANSWER_CHOICES = ["Left", "Right", "Tie"]


def build(app) -> None:
    with gr.Tab("Review", id="review"):
        gr.Markdown("Two pictures from two hidden sources — engines, Stable Diffusion or real training "
                    "images. Answer both questions for each pair; your answers are stored with your name. "
                    "Which source made which picture is never shown. In a translation round an input "
                    "picture comes first and both pictures are made from it (by a translation engine, "
                    "or the real artwork of the same name).")
        r_note = gr.Markdown(elem_id="review-note")
        with gr.Row():
            r_name = gr.Textbox(label="Your name", elem_id="review-name", max_length=L.max_rater_chars, scale=3)
            r_start = gr.Button("Start", variant="primary", scale=1, elem_id="review-start")
        r_session = gr.State(None)
        # the round on screen, sent back with the answers: a repeated click cannot store them twice
        r_round = gr.Textbox("", visible=False, elem_id="review-round")
        with gr.Column(visible=False) as r_panel:
            r_progress = gr.Markdown(elem_id="review-progress")
            with gr.Row(equal_height=True):
                r_input = gr.Image(label="Input", elem_id="review-input", format="png", interactive=False,
                                   height=300, elem_classes="pl-review-img", buttons=["fullscreen"],
                                   visible=False)
                r_left = gr.Image(label="Left", elem_id="review-left", format="png", interactive=False, height=300,
                                  elem_classes="pl-review-img", buttons=["fullscreen"])
                r_right = gr.Image(label="Right", elem_id="review-right", format="png", interactive=False, height=300,
                                   elem_classes="pl-review-img", buttons=["fullscreen"])
            with gr.Row():
                r_q1 = gr.Radio(ANSWER_CHOICES, label=QUESTIONS["pokemon"], elem_id="review-q-pokemon")
                r_q2 = gr.Radio(ANSWER_CHOICES, label=QUESTIONS["novel"], elem_id="review-q-novel")
                r_q3 = gr.Radio(ANSWER_CHOICES, label=QUESTIONS["faithful"], elem_id="review-q-faithful",
                                visible=False)
            with gr.Row():
                r_submit = gr.Button("Submit and next", variant="primary", elem_id="review-submit")
                r_skip = gr.Button("Skip this pair")
            upscale_ui.panel(app, "review", [r_left, r_right], "review")

    review_out = [r_session, r_left, r_right, r_progress, r_q1, r_q2, r_panel, r_input, r_q3]
    layout = (app.review_layout, r_session, [r_q2, r_q3, r_input, r_note, r_round])
    r_start.click(h(app.review_start_page), [r_name, r_session], review_out,
                  api_name="review_start").success(*layout, **priv)
    r_name.submit(h(app.review_start_page), [r_name, r_session], review_out, **priv).success(*layout, **priv)
    # 'faithful' last and optional, so two-answer callers of the generation rounds keep working
    r_submit.click(h(app.review_answer_page), [r_q1, r_q2, r_session, r_q3, r_round], review_out,
                   api_name="review_answer").success(*layout, **priv)
    r_skip.click(h(app.review_skip), [r_session], review_out, api_name="review_skip").success(*layout, **priv)
