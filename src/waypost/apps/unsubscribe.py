"""The mailto form of List-Unsubscribe (RFC 2369): mail to ``unsubscribe@<mail domain>``.

Anyone may write here (the token, not the allowlist, authorises), and nobody gets an answer:
confirming by mail would write to someone who just asked us to stop. The token is looked for
in the subject (where our mailto URI puts it) and then in the body (some clients move it).
Without a valid token nothing changes and the message is kept for the operator, who can act
on a plain "please remove me".
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.engine import Connection

from waypost.outbound.unsubscribe import Unsubscriber
from waypost.pipeline.router import BaseApp, Commit, InboundMail
from waypost.reputation.digest import REMOVAL_REQUEST_NOTE

log = logging.getLogger(__name__)


class UnsubscribeApp(BaseApp):
    name = "unsubscribe"
    open_to_all = True  # the gate's allowlist does not apply: people leaving need not be allowed in
    # kept: a request without a token is for the operator to read (retention rules come later)
    raw_retention: timedelta | None = None

    def __init__(self, mailbox: str, unsubscriber: Unsubscriber) -> None:
        self.mailbox = mailbox
        self.unsubscriber = unsubscriber

    def handle(self, mail: InboundMail) -> Commit:
        tokens = self.unsubscriber.tokens
        subscription = tokens.find(mail.message.subject) or tokens.find(mail.message.text)
        if subscription is None:
            log.info("unsubscribe mail %s from %s carries no valid token; kept for the operator", mail.id,
                     mail.sender)

            def nothing(conn: Connection) -> str:
                # the digest (reputation/digest.py) finds these removal requests by this note
                return f"{REMOVAL_REQUEST_NOTE}: nothing changed; kept for the operator"

            return nothing

        def commit(conn: Connection) -> str:
            new = self.unsubscriber.apply(conn, subscription, source="mailto")
            log.info("%s unsubscribed from %s by mail%s", subscription.address, subscription.stream,
                     "" if new else " (already suppressed)")
            return f"unsubscribed {subscription.address} from {subscription.stream}"

        return commit
