"""``/docs``: Swagger UI from the ``swagger-ui-bundle-v2`` package, so the page works without internet.

FastAPI's default page loads Swagger UI's script and stylesheet from a CDN; on a host without
internet access (or behind a strict proxy) it renders blank. The same files ship in a PyPI
package; they are served from ``/docs/static``.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

__all__ = ["mount_docs"]

STATIC = "/docs/static"


def mount_docs(app: FastAPI) -> None:
    """Serve ``/docs`` (the page) and ``/docs/static`` (Swagger UI's files) from the installed package."""
    app.mount(STATIC, StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} — API",
            swagger_js_url=f"{STATIC}/swagger-ui-bundle.js", swagger_css_url=f"{STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC}/favicon-32x32.png",
        )
