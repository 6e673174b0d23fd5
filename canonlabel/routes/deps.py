"""What the routers share: the service, bearer tokens, and error mapping.

Everything is read from ``request.app.state`` (``settings``, ``service``), which
:func:`canonlabel.server.create_app` sets, so the routers are plain module-level objects.
"""

from __future__ import annotations

import asyncio
import hmac

from fastapi import Depends, HTTPException, Request

from canonlabel.errors import CanonlabelError, CurationError, StaleLabelSpaceError
from canonlabel.service import Service, ServiceClosed


def service(request: Request) -> Service:
    return request.app.state.service


async def wait(future):
    return await asyncio.wrap_future(future)


async def run(request: Request, fn, exclusive: bool = False):
    """Run ``fn(classifier)`` on the service's worker thread; errors become HTTP codes."""
    try:
        return await wait(service(request).call(fn, exclusive=exclusive))
    except ServiceClosed as exc:
        raise HTTPException(503, str(exc)) from None
    except CurationError as exc:
        raise HTTPException(409 if "already" in str(exc) else 422, str(exc)) from None
    except StaleLabelSpaceError as exc:  # another replica changed labels meanwhile
        raise HTTPException(409, str(exc)) from None
    except CanonlabelError as exc:
        raise HTTPException(422, str(exc)) from None


def check_text(request: Request, text: str) -> None:
    limit = request.app.state.settings.max_text_chars
    if len(text) > limit:
        raise HTTPException(413, f"text over {limit} characters")


def _auth(admin: bool):
    async def check(request: Request) -> None:
        settings = request.app.state.settings
        tokens = [settings.admin_token] if admin and settings.admin_token else []
        if not tokens and settings.api_token:
            tokens = [settings.api_token]
        if not tokens:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        if not any(hmac.compare_digest(given.encode(), t.encode()) for t in tokens):
            raise HTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    return Depends(check)


user = _auth(False)  # the API token, if one is set
admin = _auth(True)  # the admin token, else the API token
