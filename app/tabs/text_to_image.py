"""The Text-to-image tab: Stable Diffusion (Pokémon fine-tune) with per-token attention maps and latent
walks, or a text-to-image GAN export (stackgan) with the same prompt box."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from .. import text_to_image as t2i
from ..appconfig import LIMITS as L
from ..widgets import export_picker, handle_errors as h, seed_box
from . import PRIVATE as priv


def build(app) -> SimpleNamespace:
    with gr.Tab("Text-to-image", id="txt2img"):
        t_status = gr.Markdown(app.sd_status())
        t_choices = app.t2i_choices()
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                # SD, or an export that takes a prompt (stackgan): the same prompt box for both
                # an API caller may name a text export by its plain key (from /exports)
                t_engine = export_picker(t_choices, "sd", lambda: {
                    e.key for e in t2i.text_exports(app.catalog)}, label="Engine",
                    elem_id="t2i-engine", visible=len(t_choices) > 1)
                t_facts = gr.Markdown("", elem_classes="pl-facts", visible=False)
                t_prompt = gr.Textbox("a cute red dragon pokemon with wings", label="Prompt", lines=2,
                                      max_length=L.max_prompt_chars)
                t_neg = gr.Textbox("", label="Negative prompt", max_length=L.max_prompt_chars)
                with gr.Row():
                    t_steps = gr.Slider(L.min_steps, L.max_steps, value=25, step=1, label="Steps", elem_id="t2i-steps")
                    t_guid = gr.Slider(L.min_guidance, L.max_guidance, value=7.5, step=0.5,
                                       label="Guidance")
                with gr.Row():
                    t_seed = seed_box(0, "Seed")
                    t_w = gr.Slider(L.min_sd_size, L.max_sd_size, value=512, step=L.sd_size_step,
                                    label="Width", elem_id="t2i-w")
                    t_h = gr.Slider(L.min_sd_size, L.max_sd_size, value=512, step=L.sd_size_step,
                                    label="Height", elem_id="t2i-h")
                t_attn = gr.Checkbox(True, label="Attention map per prompt token")
                t_count = gr.Slider(1, t2i.MAX_TEXT_IMAGES, value=8, step=1, label="Images",
                                    info="one per seed from the seed up", visible=False)
                t_btn = gr.Button("Generate", variant="primary", elem_id="t2i-btn")
                t_btn_gan = gr.Button("Generate", variant="primary", elem_id="t2i-gan-btn",
                                      visible=False)
            with gr.Column(scale=2):
                t_img = gr.Image(label="Image", elem_id="t2i-image", format="png", interactive=False,
                                 buttons=["download", "fullscreen"])
                t_info = gr.Markdown(elem_id="t2i-info")
        t_maps = gr.Gallery(elem_id="t2i-maps",
                            label="Where each token looks (cross-attention, averaged over steps and layers)",
                            columns=6, height="auto", format="png", interactive=False)
        with gr.Accordion("Latent interpolation", open=False) as t_interp:
            gr.Markdown("Walk the initial noise between two seeds (same prompt), or the text embedding "
                        "between the prompt above and a second prompt (same seed). Each frame is a "
                        "full diffusion run.")
            with gr.Row():
                t_seed_b = seed_box(1, "Seed B")
                t_prompt_b = gr.Textbox("a cute blue turtle pokemon", label="Prompt B",
                                        max_length=L.max_prompt_chars)
                t_frames = gr.Slider(L.min_sd_frames, L.max_sd_frames, value=6, step=1, label="Frames")
                t_fps = gr.Slider(L.min_fps, L.max_fps, value=4, step=1, label="GIF frames/s")
            with gr.Row():
                t_btn_seeds = gr.Button("Interpolate seeds (seed → seed B)")
                t_btn_prompts = gr.Button("Interpolate prompts (prompt → prompt B)")
            with gr.Row():
                t_strip = gr.Image(label="Frames", format="png", interactive=False, scale=3)
                with gr.Column(scale=1):
                    t_gif = gr.Image(label="Animation", type="filepath", interactive=False, height=240)

    t_attn.change(lambda on: gr.update(visible=bool(on)), t_attn, t_maps, **priv)
    t_engine.change(h(app.on_t2i_engine_change), t_engine,
                    [t_facts, t_count, t_btn_gan, t_btn, t_neg, t_steps, t_guid, t_w, t_h, t_attn, t_maps,
                     t_interp, t_status], **priv)
    t_btn_gan.click(h(app.text_to_image_gan), [t_engine, t_prompt, t_seed, t_count], [t_img, t_info],
                    api_name="text_to_image_gan")
    sd_common = [t_neg, t_steps, t_guid]
    # one diffusion at a time (concurrency_id "sd"), and the status line refreshed after each
    t_btn.click(h(app.txt2img), [t_prompt, t_neg, t_steps, t_guid, t_seed, t_w, t_h, t_attn],
                [t_img, t_maps, t_info, t_status], api_name="text_to_image", concurrency_limit=1,
                concurrency_id="sd").then(app.sd_status, None, t_status, **priv)
    t_btn_seeds.click(h(app.sd_interp_seeds), [t_prompt, *sd_common, t_seed, t_seed_b, t_frames, t_w, t_h,
                                               t_fps],
                      [t_strip, t_gif, t_status], api_name="sd_interpolate_seeds",
                      concurrency_limit=1, concurrency_id="sd").then(app.sd_status, None, t_status, **priv)
    t_btn_prompts.click(h(app.sd_interp_prompts), [t_prompt, t_prompt_b, *sd_common, t_seed, t_frames, t_w,
                                                   t_h, t_fps],
                        [t_strip, t_gif, t_status], api_name="sd_interpolate_prompts",
                        concurrency_limit=1, concurrency_id="sd").then(app.sd_status, None, t_status, **priv)
    return SimpleNamespace(status=t_status)
