"""The reports mailbox (``dmarc.mailbox``, default ``dmarc@<mail domain>``): DMARC aggregate and
failure reports and SMTP TLS reports, as published in ``rua=``/``ruf=`` of our DMARC record and
``rua=`` of our TLS-RPT record.

Anyone may write here (receivers report from their own domains) and nobody gets an answer.
Each report is stored once (a reporter that sends it twice changes nothing); what cannot be
read is stored flagged as malformed, and the mail still counts as handled.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.engine import Connection

from waypost.dmarc.mail import read_reports
from waypost.dmarc.store import save
from waypost.pipeline.router import BaseApp, Commit, InboundMail

log = logging.getLogger(__name__)


class DmarcReportsApp(BaseApp):
    name = "dmarc"
    open_to_all = True  # reports come from every mailbox provider that receives our mail
    reads_raw = True

    def __init__(self, mailbox: str, *, max_report_bytes: int, keep_days: float) -> None:
        self.mailbox = mailbox
        self.max_report_bytes = max_report_bytes
        # the mail itself is only needed until its reports are stored; they follow their own retention
        self.raw_retention = timedelta(days=keep_days)

    def handle(self, mail: InboundMail) -> Commit:
        reports = read_reports(mail.raw or b"", self.max_report_bytes)

        def commit(conn: Connection) -> str:
            notes = []
            for report in reports:
                new = save(conn, report, mail.received_at)
                what = f"{report.kind} report {report.org_name or '?'}/{report.report_id or '-'}"
                if report.malformed:
                    what += f" MALFORMED ({report.problem})"
                notes.append(what if new else f"{what} (already stored)")
            log.info("dmarc %s: %s", mail.id, "; ".join(notes))
            return "; ".join(notes)[:2000]

        return commit
