"""Bounce and complaint mail (plain-SMTP mode): DSNs (RFC 3464) coming back to the VERP
envelope sender ``bounces+<id>-<mac>@<bounce domain>``, and ARF complaints (RFC 5965) from
the feedback loops an operator signs up to, addressed to ``<complaints mailbox>@<mail domain>``.

Anyone may write here, and nobody ever gets an answer (no backscatter). What a report may
change is limited by the feedback policy: it acts only through an outbound row of ours that
the report names (the signed VERP address, or our Message-ID quoted in it).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.engine import Connection

from waypost.feedback.events import FeedbackFormatError
from waypost.feedback.intake import FeedbackApplier
from waypost.feedback.reports import read_report
from waypost.pipeline.router import BaseApp, Commit, InboundMail

log = logging.getLogger(__name__)


class FeedbackMailApp(BaseApp):
    open_to_all = True  # bounces come from mail servers, complaints from mailbox providers
    reads_raw = True

    def __init__(self, name: str, mailbox: str, domain: str | None, intake: FeedbackApplier, *,
                 keep_days: float) -> None:
        self.name = name
        self.mailbox = mailbox
        self.domain = domain
        # the same door as queue-borne feedback, applied inside this mail's processing transaction
        self.intake = intake
        # a report quotes the message we sent, personal data: kept no longer than needed to check it
        self.raw_retention = timedelta(days=keep_days)

    def handle(self, mail: InboundMail) -> Commit:
        try:
            report = read_report(mail.raw or b"", verp_address=mail.recipient)
        except FeedbackFormatError as err:
            why = f"not a bounce or complaint report ({err}): nothing changed"

            def nothing(conn: Connection) -> str:
                return why

            return nothing

        def commit(conn: Connection) -> str:
            applied = self.intake.apply_on(conn, report.events)
            log.info("%s %s: %s", self.name, mail.id, applied)
            return f"{report.summary}; {applied}"[:2000]

        return commit
