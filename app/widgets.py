"""The app's shared widgets: pickers, upload and seed fields, output pictures, and the error wrapper every
handler goes through. The tabs (``app.tabs``) build their pages from these."""
from __future__ import annotations

import functools
import logging

import gradio as gr

from engines.errors import USER_ERRORS
from engines.review import ReviewDBError

from .appconfig import LIMITS
from .inputs import AppInputError
from .sd_pokemon import SDUnavailable

log = logging.getLogger("pokelab.app")

#: the "Show collapsed exports" box's explanation (Generate, Interpolate, Translate)
SHOW_COLLAPSED_INFO = ("their run's last evaluation flagged mode collapse (samples far more alike than real "
                       "images); they are listed last")


def picture_upload(**kw) -> gr.Image:
    """A gr.Image input whose upload reaches the handler as a path, undecoded: ``app.translate`` checks its
    size, pixel count and content itself, with the app's limits and messages (gr.Image opens it with PIL
    first and fails on a broken file with PIL's words). The instance's ``preprocess`` is replaced rather
    than subclassed because gradio writes a .pyi stub next to the source of every component subclass."""
    comp = gr.Image(type="filepath", image_mode=None, **kw)
    plain = comp.preprocess

    def preprocess(payload):
        if payload is None or (payload.url or "").startswith("data:"):
            return plain(payload)
        return str(payload.path)

    comp.preprocess = preprocess
    return comp


def export_picker(choices, value, valid, **kw) -> gr.Dropdown:
    """The export dropdown of a tab. It lists what the page offers (collapsed exports only on request), but
    a request naming any export the catalog has of the tab's kind is accepted: ``valid()`` gives those keys,
    so an API caller can still sample a collapsed export by its key (from /exports). An unknown key gets
    gradio's own 'not in the list of choices'. Same instance-level trick as ``picture_upload``."""
    comp = gr.Dropdown(choices, value=value, **kw)
    plain = comp.preprocess

    def preprocess(payload):
        if isinstance(payload, str) and payload in valid():
            return payload
        return plain(payload)

    comp.preprocess = preprocess
    return comp


NOVELTY_COST = ("each sample's nearest training image in Inception features; the first lookup per dataset "
                "computes the features of the whole training set (217 s for 649 images on a 2-core CPU), "
                "later ones reuse them")


def seed_box(value: int, label: str) -> gr.Number:
    """A seed field. Not ``precision=0``: gradio would round 1.5 to 2 without a word; the handlers check
    that a seed is a whole number (``app.inputs.as_int``) and say so."""
    return gr.Number(value, label=label, precision=None, step=1, minimum=0, maximum=LIMITS.max_seed)


def engine_picture(label: str, elem_id: str, download: bool = False, visible: bool = True) -> gr.Image:
    """An output picture of the Translate tab: small engine pictures fill their box, enlarged without smoothing."""
    return gr.Image(label=label, elem_id=elem_id, format="png", interactive=False, height=256,
                    elem_classes=["pl-pixel", "pl-fill"], visible=visible,
                    buttons=["download", "fullscreen"] if download else ["fullscreen"])


def handle_errors(fn):
    """User mistakes and unavailable models become a gr.Error with their message; anything else is
    logged with its traceback on the server and reported as one line (never a traceback in the page)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (AppInputError, SDUnavailable, ReviewDBError, *USER_ERRORS) as e:
            raise gr.Error(str(e), print_exception=False) from None
        except Exception as e:  # noqa: BLE001 - the page gets a sentence, the log the traceback
            log.exception("error in %s", fn.__name__)
            raise gr.Error(f"Something went wrong ({type(e).__name__}: {str(e)[:200]}). "
                           "The server log has the details.", print_exception=False) from None

    return wrapper
