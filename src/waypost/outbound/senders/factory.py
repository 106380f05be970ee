"""The transport a configuration names, built when first needed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from waypost.config import Settings
from waypost.outbound.senders.base import BaseSender, Envelope, Handoff, Sender, SendLimits
from waypost.outbound.senders.catcher import CatcherSender

log = logging.getLogger(__name__)


class LazySender(BaseSender):
    """The configured transport, built on first use: commands that never send (`waypost
    pause`, `suppression add`) must work even while the transport cannot be set up, which is
    when an operator needs them most. `serve` and `worker` build it at start (``ready``) so a
    bad configuration stops them at once."""

    def __init__(self, name: str, factory: Callable[[], Sender]) -> None:
        self.name = name
        self._factory = factory
        self._sender: Sender | None = None
        self._lock = threading.Lock()

    def _built(self) -> Sender:
        with self._lock:
            if self._sender is None:
                self._sender = self._factory()
                self._sender.ready()
            return self._sender

    def ready(self) -> None:
        self._built()

    @property  # known once the transport is built
    def confirms(self) -> bool:
        return self._built().confirms

    def send(self, envelope: Envelope, raw: bytes, handoff: Handoff) -> str:
        return self._built().send(envelope, raw, handoff)

    def confirm(self, envelope: Envelope) -> str | None:
        return self._built().confirm(envelope)

    def account_limits(self) -> SendLimits | None:
        return self._built().account_limits()

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()


def make_sender(settings: Settings) -> Sender:
    """The transport ``outbound.transport`` names; the SMTP and SES adapters load only here."""
    transport = settings.outbound.transport
    if transport == "smtp":
        from waypost.mail.dkim_sign import DkimSigner
        from waypost.outbound.senders.smtp import SmtpSender

        signer = DkimSigner.from_settings(settings.dkim, domain=settings.dkim_domain)
        if signer is None:
            log.warning("SMTP mode without DKIM signing (dkim.selector and dkim.private_key_path unset): "
                        "receivers offer one-click unsubscribe only on signed mail; unless the smarthost "
                        "signs for %s, set up a key with `waypost dkim keygen`", settings.dkim_domain)
        return SmtpSender.from_settings(settings, signer)
    if transport == "ses":
        from waypost.outbound.senders.ses import SesSender

        return SesSender.from_settings(settings.ses)
    return CatcherSender(settings.outbox_dir)
