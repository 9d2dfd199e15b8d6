"""Web UI (Gradio) for generation: ``ovi-ui`` (ovi/cli/ui.py) serves ``ovi.ui.app.build_app``."""
