"""A loopback HTTP server holding an SES v2 account-level suppression list, for the push of our
changes to it: moto (5.2.6) implements none of the suppressed-destination calls (REFERENCE-SES
§10), so boto3 talks to this instead with only ``endpoint_url`` different.

Requests follow the Amazon SES API v2 reference: PutSuppressedDestination is
``PUT /v2/email/suppression/addresses`` with ``{"EmailAddress", "Reason"}``;
Get/DeleteSuppressedDestination are ``GET``/``DELETE /v2/email/suppression/addresses/{EmailAddress}``;
errors use the REST-JSON form (status and ``x-amzn-ErrorType``). ``failing`` answers the next
that many calls with HTTP 500 ``InternalFailure``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

from tests.support.json_http import serving_json

PREFIX = "/v2/email/suppression/addresses"


class SuppressionListStub:
    def __init__(self) -> None:
        self.listed: dict[str, str] = {}  # address -> reason
        self.calls: list[tuple[str, str]] = []  # (method, address)
        self.failing = 0
        self.lock = threading.Lock()

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, str | None, dict[str, Any]]:
        with self.lock:
            if not path.startswith(PREFIX):
                return 404, "NotFoundException", {"message": f"{path} is not stubbed"}
            if method == "PUT":
                request = json.loads(body or b"{}")
                address = request["EmailAddress"]
            else:
                address = unquote(path[len(PREFIX) + 1:])
            self.calls.append((method, address))
            if self.failing:
                self.failing -= 1
                return 500, "InternalFailure", {"message": "stub told to fail"}
            if method == "PUT":
                if request.get("Reason") not in ("BOUNCE", "COMPLAINT"):
                    return 400, "BadRequestException", {"message": "Reason must be BOUNCE or COMPLAINT"}
                self.listed[address] = request["Reason"]
                return 200, None, {}
            if address not in self.listed:
                return 404, "NotFoundException", {"message": f"{address} is not on the suppression list"}
            if method == "DELETE":
                del self.listed[address]
                return 200, None, {}
            return 200, None, {"SuppressedDestination": {"EmailAddress": address, "Reason": self.listed[address]}}


@contextmanager
def running_suppression_stub() -> Iterator[tuple[str, SuppressionListStub]]:
    stub = SuppressionListStub()
    with serving_json(stub.handle) as url:
        yield url, stub
