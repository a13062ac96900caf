"""The page at /: the API in a browser, for people; kept out of the OpenAPI schema."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

PAGE = Path(__file__).parents[1] / "static" / "index.html"

router = APIRouter()


@router.get("/", include_in_schema=False, response_class=HTMLResponse)
def page() -> HTMLResponse:
    """The page for trying the API in a browser (no CDN, no build step)."""
    return HTMLResponse(PAGE.read_text(encoding="utf-8"))
