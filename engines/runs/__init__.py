"""The run format (docs/run-format.md): what a training run leaves on disk and who reads it.

- ``folder``: run folders, run.json, metrics.jsonl, locks, atomic writes (no torch import: the studio uses it)
- ``export``: the self-describing export a run ships (weights + config) and its loader
- ``timeline``: a run's sample grids in epoch order
- ``gif``: progress GIFs of those grids

Importing the package imports none of them.
"""
