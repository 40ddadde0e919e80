"""pokelab's Gradio app: generate, interpolate, translate pictures, text-to-image with attention maps,
blind review.

Run it with ``python -m app`` (or ``python app/main.py``, which is also the Hugging Face Spaces entry);
``python -m app --help`` lists the flags. The pieces without UI code are importable on their own:
``app.exports`` (export discovery and caching), ``app.gan`` (sampling, interpolation, GIF/MP4),
``app.translate`` (uploads, image-to-image translation, attention maps),
``app.sd_pokemon`` (Stable Diffusion, attention maps), ``app.review_book`` (blind review).
"""
