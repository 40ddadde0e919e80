"""``python -m app``: start the Gradio app (flags: ``python -m app --help``)."""
from app.main import main

if __name__ == "__main__":
    main()
