"""ASGI entry point for uvicorn workers: the home comes from FRESHCONTEXT_HOME."""

from service.app import create_app

app = create_app()
