"""``python -m studio [--runs DIR ...] [--review-db PATH] [--lock-roots] [--refresh S]``: start the studio.

The same as ``streamlit run studio -- ARGS``; Streamlit's own options can be given through its
environment variables (e.g. STREAMLIT_SERVER_PORT=8502).
"""
from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.strip())
        return 0
    try:
        from streamlit.web import cli as stcli
    except ImportError:
        print("the studio needs Streamlit: pip install 'pokelab[studio]'", file=sys.stderr)
        return 2
    app = Path(__file__).resolve().parent / "streamlit_app.py"
    sys.argv = ["streamlit", "run", str(app), "--", *argv]
    return stcli.main()


if __name__ == "__main__":
    raise SystemExit(main())
