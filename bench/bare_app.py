"""The baseline of the ingest benchmark: a bare Starlette endpoint that only parses the webhook's JSON body
and answers 200 with the service's body, served by uvicorn exactly as `run.py serve` serves the real app
(`uvicorn.run(app, host, port, log_level="info", log_config=None)`, same event loop and HTTP implementation),
with an INFO log handler on the root logger so uvicorn's access log is written like the service's.

    .venv/bin/python bench/bare_app.py --port 8100
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

WEBHOOK_PATH = "/api/webhooks/whatsapp/evolution"


async def webhook(request: Request) -> Response:
    payload = json.loads(await request.body())
    if not isinstance(payload, dict):
        return JSONResponse({"error": "expected an object"}, status_code=422)
    return JSONResponse({"success": True, "message": "Webhook processed"})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[Route(WEBHOOK_PATH, webhook, methods=["POST"]), Route("/readyz", healthz, methods=["GET"])]
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(name)s %(message)s")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", log_config=None)


if __name__ == "__main__":
    main()
