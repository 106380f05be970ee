"""`waypost suppression sync-ses`: copy SES's account-level suppression list into ours (the
pull); and ``SesSuppressionPush``, the job that mirrors our changes to it (the push).

boto3 has no paginator for ``ListSuppressedDestinations`` (REFERENCE-SES §4), so this follows
``NextToken`` itself, 1,000 entries a page, pausing between pages because SES throttles
non-send calls at about one per second; a ``TooManyRequestsException`` waits and tries again.
Each page is committed as it arrives, so an interrupted sync keeps what it copied and a rerun
adds only what is missing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from waypost.config import Settings
from waypost.errors import TransientError, WaypostError
from waypost.outbound import suppression
from waypost.store.queue import Job, JobKind, JobQueue

log = logging.getLogger(__name__)

PAGE_SIZE = 1000
MAX_THROTTLED = 6
_REASONS = {"BOUNCE": suppression.Reason.BOUNCE, "COMPLAINT": suppression.Reason.COMPLAINT}


class SesSyncError(WaypostError):
    """SES's list could not be read; what was copied before stays."""


@dataclass(frozen=True)
class SyncResult:
    pages: int
    seen: int
    added: int


def sync_from_ses(engine: Engine, settings: Settings, *, dry_run: bool = False, client: Any = None,
                  progress: Callable[[int, int], None] | None = None,
                  wait: Callable[[float], None] = time.sleep) -> SyncResult:
    """Copy every entry; ``wait`` paces the pages and waits out throttling."""
    client = client or _client(settings)
    pause = settings.feedback.ses_sync_pause_seconds
    pages = seen = added = 0
    token: str | None = None
    while True:
        page = _page(client, token, pause, wait)
        pages += 1
        entries = [_entry(item) for item in page.get("SuppressedDestinationSummaries", [])]
        seen += len(entries)
        with engine.begin() as conn:
            if dry_run:
                added += sum(1 for e in entries if suppression.lookup(conn, e.address) is None)
            else:
                added += len(suppression.add_many(conn, entries, by="ses-sync"))
        if progress is not None:
            progress(pages, seen)
        token = page.get("NextToken")
        if not token:
            return SyncResult(pages, seen, added)
        wait(pause)


def _page(client: Any, token: str | None, pause: float, wait: Callable[[float], None]) -> dict[str, Any]:
    from botocore.exceptions import BotoCoreError, ClientError

    request = {"PageSize": PAGE_SIZE, **({"NextToken": token} if token else {})}
    for attempt in range(MAX_THROTTLED):
        try:
            return client.list_suppressed_destinations(**request)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code not in ("TooManyRequestsException", "Throttling") or attempt == MAX_THROTTLED - 1:
                raise SesSyncError(f"SES ListSuppressedDestinations failed: {code}: {err}") from err
            delay = max(pause, 1.0) * 2 ** attempt
            log.info("SES throttled the suppression list read; waiting %.1fs", delay)
            wait(delay)
        except BotoCoreError as err:
            raise SesSyncError(f"SES ListSuppressedDestinations failed: {err}") from err
    raise AssertionError("unreachable")


def _entry(item: dict[str, Any]) -> suppression.NewEntry:
    reason = _REASONS.get(str(item.get("Reason", "")).upper(), suppression.Reason.BOUNCE)
    since = item.get("LastUpdateTime")
    detail = f"on SES's account-level list ({item.get('Reason')}" + (f", since {since:%Y-%m-%d})" if since else ")")
    return suppression.NewEntry(str(item["EmailAddress"]), reason, "ses-sync", detail)


def _client(settings: Settings) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "sesv2", region_name=settings.ses.region, endpoint_url=settings.ses.endpoint_url,
        config=Config(retries={"total_max_attempts": 1}))


class SesSuppressionPush:
    """Runs ``suppression.SES_PUSH_JOB``: makes SES's account-level list agree with ours for one
    address. It reads our entry when it runs, not when it was queued, so jobs that run late
    or out of order still leave SES with our latest state: a bounce or complaint in force is
    put (PutSuppressedDestination), anything else is deleted (DeleteSuppressedDestination;
    absent already is fine). Any SES failure raises ``TransientError``: the worker retries
    with backoff, and our own entry was committed before the job ran."""

    def __init__(self, engine: Engine, queue: JobQueue, settings: Settings, client: Any = None) -> None:
        self.engine = engine
        self.queue = queue
        self.settings = settings
        self._client = client

    def job_kinds(self) -> list[JobKind]:
        return [JobKind(suppression.SES_PUSH_JOB, self.run, self._gave_up)]

    def run(self, job: Job) -> None:
        address = str(job.payload["address"])
        with self.engine.connect() as conn:
            entry = suppression.lookup(conn, address)
        if entry is not None and entry.reason in suppression.SES_REASONS:
            self._call("PutSuppressedDestination", EmailAddress=address, Reason=entry.reason.value)
        else:
            self._call("DeleteSuppressedDestination", EmailAddress=address)
        with self.engine.begin() as conn:
            self.queue.complete(conn, job)

    def _call(self, operation: str, **params: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        if self._client is None:
            self._client = _client(self.settings)
        method = getattr(self._client, "put_suppressed_destination" if operation.startswith("Put")
                         else "delete_suppressed_destination")
        try:
            method(**params)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if operation.startswith("Delete") and code == "NotFoundException":
                return  # SES never had it, or it is gone already: what we wanted
            raise TransientError(f"SES {operation} failed: {code}: {err}") from err
        except BotoCoreError as err:
            raise TransientError(f"SES {operation} failed: {err}") from err

    @staticmethod
    def _gave_up(job: Job, why: str) -> None:
        log.error("gave up pushing %s to SES's suppression list (%s); our own list has it as it should; "
                  "fix SES access and change the entry again, or mirror it in the SES console",
                  job.payload.get("address"), why)
