"""ASGI entry point for uvicorn workers: the home comes from FRESHCONTEXT_HOME."""

from service.app import create_app
from service.compute import one_compute_thread

one_compute_thread()  # a worker, or `freshcontext serve`'s own process with one worker
app = create_app()
