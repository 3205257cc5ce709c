"""Reports: figures (matplotlib, headless) and the one HTML page builder (Jinja2)."""
