"""The REST API (FastAPI): built by ``create_app(runtime)``, nothing at import time."""
