"""The frame of every page treadle shows a person: one document shell, one set of headers.

Pages are plain server-rendered HTML that must read well on a phone, are never cached or
framed, and never send the referrer (their URLs carry single-purpose tokens).
"""

from __future__ import annotations

import hmac
import html
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from treadle.api.bodies import BodyTooLarge, read_bounded
from treadle.api.context import gateway

BASE_STYLE = """
body{font-family:system-ui,-apple-system,sans-serif;margin:0;padding:1rem;background:#f6f7f9;
color:#1d2430;line-height:1.45}
main{max-width:36rem;margin:0 auto;background:#fff;border-radius:12px;padding:1.25rem;
box-shadow:0 1px 3px rgba(0,0,0,.08)}
h1{font-size:1.25rem;margin:0 0 1rem}
button{font-size:1.05rem;padding:.8rem;border:0;border-radius:8px;cursor:pointer}
.status{font-weight:600}
"""


def security_headers(form_action: str = "'self'") -> dict[str, str]:
    return {
        "Cache-Control": "no-store",
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'unsafe-inline'; form-action {form_action}; "
            "frame-ancestors 'none'; base-uri 'none'"
        ),
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }


def render_page(
    title: str,
    body: str,
    *,
    style: str,
    headers: dict[str, str],
    status: int = 200,
    csrf_cookie: tuple[str, str, str] | None = None,
) -> Response:
    """`body` is trusted HTML (callers escape what they interpolate); `csrf_cookie` is
    (name, value, path) for the double-submit check of a form on the page."""
    document = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{BASE_STYLE}{style}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )
    response = HTMLResponse(document, status_code=status, headers=headers)
    if csrf_cookie is not None:
        name, value, path = csrf_cookie
        response.set_cookie(name, value, httponly=True, samesite="strict", path=path)
    return response


def _own_origins(request: Request) -> set[str]:
    """The origin the request reached, and the public URL's (behind a TLS-terminating proxy
    the browser's origin is the public one)."""
    public = urlsplit(gateway(request).settings.public_url)
    return {f"{request.url.scheme}://{request.url.netloc}", f"{public.scheme}://{public.netloc}"}


async def verified_form(
    request: Request,
    *,
    csrf_cookie: str,
    max_bytes: int,
    refused: Callable[[str, int], Response],
) -> dict[str, str] | Response:
    """A posted form of at most `max_bytes`, from one of our own origins and carrying the
    double-submit `csrf` value of `csrf_cookie`; otherwise the page's refusal."""
    try:
        raw = await read_bounded(request, max_bytes)
    except BodyTooLarge:
        return refused("The form is too large.", 413)
    form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
    origin = request.headers.get("origin")
    cookie = request.cookies.get(csrf_cookie, "")
    if (
        (origin not in (None, "null") and origin not in _own_origins(request))
        or not cookie
        # Bytes: compare_digest refuses str with non-ASCII characters (a forged field may).
        or not hmac.compare_digest(cookie.encode(), form.get("csrf", "").encode())
    ):
        return refused("The form could not be verified. Open the link again.", 403)
    return form
