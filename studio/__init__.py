"""pokelab studio: a Streamlit app to judge training runs and review results.

Start it with ``streamlit run studio`` (Streamlit runs ``studio/streamlit_app.py`` when given this
folder) or ``python -m studio``. The page code lives in ``streamlit_app.py``; everything it shows is
computed by plain modules that tests and benchmarks import without Streamlit:

- ``studio.paths``        configured roots and the "only read inside the roots" check
- ``studio.data``         discovering and loading runs (pokelab — generation and translation —,
                          stylegan2-ada-pytorch, lightweight-gan), the runs table and the per-run verdict
- ``studio.grids``        sample grids: tiles, SSIM diversity, nearest epoch, timeline GIF
- ``studio.plots``        plotly figures
- ``studio.review_stats`` win rates, Bradley-Terry ranking, rater agreement
- ``studio.demo``         realistic synthetic runs (screenshots, benchmark, trying the studio)

Nothing here imports torch or the training code (docs/studio.md).
"""
