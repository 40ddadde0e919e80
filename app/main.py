"""Entry point: ``python -m app`` or ``python app/main.py`` (the Hugging Face Spaces ``app_file``).

Run as a script, Python puts ``app/`` itself first on ``sys.path``; it is swapped for the repository
root so ``import engines`` and ``import app`` work and no module in ``app/`` shadows a library.
"""
from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

if __name__ == "__main__" and __package__ in (None, ""):
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from app.appconfig import AppConfig, config_from_args  # noqa: E402


def create_app(argv: list[str] | None = None, config: AppConfig | None = None):
    """Build the app (exports scanned, nothing loaded yet) without starting the server."""
    from app.ui import PokelabApp

    return PokelabApp(config or config_from_args(argv))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = config_from_args(argv)
    app = create_app(config=cfg)
    gens, trans = app.catalog.generators(), app.catalog.translators()
    print(f"pokelab app: {len(gens)} generation export(s) ({', '.join(e.key for e in gens) or 'none found'}), "
          f"{len(trans)} translation export(s) ({', '.join(e.key for e in trans) or 'none found'}); "
          f"review answers go to {cfg.review_db}", flush=True)
    flagged = app.catalog.collapsed()
    if flagged:
        print(f"flagged collapsed by their run's last evaluation (hidden by default, never reviewed): "
              f"{', '.join(e.key for e in flagged)}", flush=True)
    # SIGTERM (docker stop, a Space restarting, kill) ends the server like Ctrl-C does, so the folder of
    # handed-out files is removed on the way out (app.close) instead of being left in the temp folder
    def _terminate(signum, frame):
        raise SystemExit(128 + signum)

    import threading

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        app.launch()
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        app.close()


if __name__ == "__main__":
    main()
