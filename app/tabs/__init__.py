"""One module per tab of the Gradio app, in page order: ``generate``, ``interpolate``, ``translate``,
``text_to_image``, ``review``, ``about``. Each ``build(app)`` lays its tab out inside the open ``gr.Blocks``,
wires its own events to the handlers on ``app`` (an ``app.ui.PokelabApp``) and returns the components that
``app.ui`` wires across tabs."""

PRIVATE = {"api_visibility": "private"}  # UI-only events: no API endpoint
