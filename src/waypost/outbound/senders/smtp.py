"""SMTP smarthost sender: one connection per message, DKIM-signed at send time.

The transaction is driven step by step (EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA) rather than
with ``sendmail`` so the handoff lands exactly between the last accepted RCPT and DATA, and
so each failure can be told apart: refused before handoff (retry freely), refused after it
(the server said no, so nothing was delivered), or the answer lost after the whole message
left (delivery unknown, never resend).
"""

from __future__ import annotations

import ipaddress
import re
import smtplib
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from waypost.errors import ConfigError, PermanentError, TransientError, WaypostError
from waypost.mail.dkim_sign import DkimSigner, to_crlf
from waypost.outbound.senders.base import (
    BaseSender,
    DeliveryUnknownError,
    Envelope,
    Handoff,
    RecipientRefusedError,
    SendingPausedError,
    ThrottledError,
)

if TYPE_CHECKING:
    from waypost.config import Settings

Security = Literal["starttls", "tls", "none"]
_SECURITY_MODES = ("starttls", "tls", "none")

# RFC 5321 §4.5.3.2.6: wait up to 10 minutes for the reply to the final dot; servers scan
# content before answering, and giving up early turns a delivery into "unknown".
DATA_END_TIMEOUT = 600.0
PROVIDER_ID_MAX = 255

# Providers signal rate and quota limits with these codes (SES: "454 Throttling failure:
# Maximum sending rate exceeded", "454 Throttling failure: Daily message quota exceeded").
_THROTTLE_CODES = frozenset({421, 451, 454})
_THROTTLE_TEXT = re.compile(r"throttl|\brate\b|too many|quota", re.IGNORECASE)
_QUOTA_TEXT = re.compile(r"quota|daily|per day", re.IGNORECASE)
RATE_RETRY_AFTER = 2.0  # a per-second rate frees up within seconds
QUOTA_RETRY_AFTER = 60.0  # a quota frees up as the rolling window moves; check again in a minute
_ENHANCED_STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}\s+")


class SmtpSender(BaseSender):
    """Delivers each message to one smarthost over a fresh connection.

    Never sends in plain text unless ``security == "none"``; with ``"starttls"`` a server
    that does not offer STARTTLS is an error, not a reason to fall back. Credentials are
    never sent unencrypted except to a loopback relay: other combinations raise
    ``ConfigError`` at construction, before any connection.
    """

    name = "smtp"

    def __init__(self, host: str, port: int, *, security: Security, username: str | None = None,
                 password: str | None = None, timeout: float = 60.0, local_hostname: str | None = None,
                 ca_file: Path | str | None = None, signer: DkimSigner | None = None,
                 data_timeout: float = DATA_END_TIMEOUT) -> None:
        if security not in _SECURITY_MODES:
            raise ConfigError(f"smarthost.security must be one of {', '.join(_SECURITY_MODES)}, not {security!r}")
        if (username is None) != (password is None):
            raise ConfigError("smarthost.username and smarthost.password must be set together")
        if username is not None and security == "none" and not _is_loopback(host):
            raise ConfigError(f"refusing to send the smarthost password to {host} without encryption; "
                              "set smarthost.security to starttls or tls (plain AUTH only to a loopback relay)")
        self.host, self.port, self.security = host, port, security
        self.timeout, self.data_timeout = timeout, data_timeout
        self.local_hostname = local_hostname
        self.signer = signer
        self._username, self._password = username, password
        self._tls = ssl.create_default_context(cafile=ca_file) if security != "none" else None

    @classmethod
    def from_settings(cls, settings: Settings, signer: DkimSigner | None) -> SmtpSender:
        relay = settings.smarthost
        return cls(relay.host, relay.port, security=relay.security, username=relay.username,
                   password=relay.password.get_secret_value() if relay.password else None,
                   timeout=relay.timeout, local_hostname=settings.smtp_hostname,
                   ca_file=relay.ca_path, signer=signer)

    def __repr__(self) -> str:
        return f"SmtpSender({self.host}:{self.port}, security={self.security})"

    def send(self, envelope: Envelope, raw: bytes, handoff: Handoff) -> str:
        """Sign, deliver, and return the server's final reply text as the provider id.

        See ``senders.base`` for what each exception means to the outbox. If ``handoff``
        raises, the transaction is abandoned before DATA and the error propagates.
        """
        message = self._prepare(raw)
        smtp = self._connect()
        try:
            try:
                self._open_session(smtp)
                self._start_transaction(smtp, envelope, message)
            except smtplib.SMTPResponseException as err:
                raise _session_refused(self._where, err) from err
            except (smtplib.SMTPException, OSError) as err:
                raise TransientError(f"smarthost {self._where}: {_describe(err)}") from err
            # on failure the finally's QUIT aborts the open transaction (RFC 5321 §4.1.1.10)
            handoff()
            return self._transfer(smtp, message)
        finally:
            _close_quietly(smtp)

    def confirm(self, envelope: Envelope) -> str | None:
        """SMTP offers no way to ask later whether a message was queued."""
        return None

    @property
    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    def _prepare(self, raw: bytes) -> bytes:
        if self.signer is None:
            return to_crlf(raw)
        try:
            return self.signer.sign(raw)
        except ValueError as err:
            raise PermanentError(str(err)) from err

    def _connect(self) -> smtplib.SMTP:
        try:
            if self.security == "tls":
                return smtplib.SMTP_SSL(self.host, self.port, local_hostname=self.local_hostname,
                                        timeout=self.timeout, context=self._tls)
            return smtplib.SMTP(self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout)
        except smtplib.SMTPResponseException as err:
            raise _session_refused(self._where, err) from err
        except (smtplib.SMTPException, OSError) as err:
            raise TransientError(f"cannot reach smarthost {self._where}: {_describe(err)}") from err

    def _open_session(self, smtp: smtplib.SMTP) -> None:
        smtp.ehlo_or_helo_if_needed()
        if self.security == "starttls":
            if not smtp.has_extn("starttls"):
                raise TransientError(f"smarthost {self._where} does not offer STARTTLS; refusing to send "
                                     "in plain text (smarthost.security = starttls)")
            smtp.starttls(context=self._tls)
            smtp.ehlo()  # RFC 3207 §4.2: forget what was learnt before TLS
        if self._username is not None and self._password is not None:
            smtp.login(self._username, self._password)

    def _start_transaction(self, smtp: smtplib.SMTP, envelope: Envelope, message: bytes) -> None:
        code, reply = smtp.mail(envelope.sender, _mail_options(smtp, envelope, message))
        if code != 250:
            raise _refused("MAIL FROM", code, reply)
        code, reply = smtp.rcpt(envelope.recipient)
        if code not in (250, 251):
            raise _refused("RCPT TO", code, reply)

    def _transfer(self, smtp: smtplib.SMTP, message: bytes) -> str:
        """DATA, the message, the final dot; the provider id from the 250 reply."""
        try:
            code, reply = smtp.docmd("DATA")
        except (smtplib.SMTPException, OSError) as err:
            raise TransientError(f"smarthost {self._where} lost before the message was sent: {_describe(err)}") from err
        if code != 354:
            raise _refused("DATA", code, reply)
        try:
            # RFC 5321 §4.5.2: a leading dot is doubled so no line can end the data early.
            smtp.send(re.sub(rb"(?m)^\.", b"..", message) + b".\r\n")
        except (smtplib.SMTPException, OSError) as err:
            # sendall stopped before its end, and the terminating dot is the end: the server
            # cannot have taken the message
            raise TransientError(f"smarthost {self._where} lost while sending: {_describe(err)}") from err
        try:
            with _socket_timeout(smtp, self.data_timeout):
                code, reply = smtp.getreply()
        except (smtplib.SMTPException, OSError) as err:
            raise DeliveryUnknownError(f"smarthost {self._where} took the whole message, then the answer was "
                                       f"lost ({_describe(err)}); not resending") from err
        if not 200 <= code < 300:
            raise _refused("end of data", code, reply)
        return _provider_id(code, reply)


def _mail_options(smtp: smtplib.SMTP, envelope: Envelope, message: bytes) -> list[str]:
    """ESMTP parameters the content needs; a server lacking them cannot carry it intact."""
    options = []
    if not message.isascii():
        if not smtp.has_extn("8bitmime"):
            raise PermanentError("message has 8-bit content and the smarthost does not offer 8BITMIME")
        options.append("BODY=8BITMIME")
    if not (envelope.sender + envelope.recipient).isascii():
        if not smtp.has_extn("smtputf8"):
            raise PermanentError("non-ASCII envelope address and the smarthost does not offer SMTPUTF8")
        options.append("SMTPUTF8")
    return options


def _refused(stage: str, code: int, reply: bytes | str) -> WaypostError:
    """A reply to MAIL, RCPT or DATA by its class: 4xx try again (or slow down), 5xx never."""
    text = _reply_text(reply)
    message = f"smarthost refused at {stage}: {code} {text}"
    if code in _THROTTLE_CODES and _THROTTLE_TEXT.search(text):
        retry_after = QUOTA_RETRY_AFTER if _QUOTA_TEXT.search(text) else RATE_RETRY_AFTER
        return ThrottledError(message, retry_after=retry_after)
    if 500 <= code < 600 and stage == "RCPT TO":
        return RecipientRefusedError(message, code=code, reply=text)
    if 500 <= code < 600:
        return PermanentError(message)
    return TransientError(message)


def _session_refused(where: str, err: smtplib.SMTPResponseException) -> WaypostError:
    """Refusals while setting up the session (greeting, STARTTLS, AUTH) are about the relay
    or our configuration, never the message, so even a 5xx there is worth retrying."""
    refusal = _refused("session setup", err.smtp_code, err.smtp_error)
    if isinstance(refusal, ThrottledError):
        return refusal
    if err.smtp_code in (530, 534, 535, 538):  # RFC 4954: our credentials or mechanism are refused
        # every message would meet this: pause the outbox instead of failing them one by one
        return SendingPausedError(f"smarthost {where} refused our login: {err.smtp_code} "
                                  f"{_reply_text(err.smtp_error)} (check smarthost.username and password)")
    return TransientError(f"smarthost {where} refused the session: {err.smtp_code} {_reply_text(err.smtp_error)}")


def _reply_text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return text.replace("\n", " ").strip()


def _provider_id(code: int, reply: bytes) -> str:
    text = _ENHANCED_STATUS.sub("", _reply_text(reply))
    return (text or str(code))[:PROVIDER_ID_MAX]


@contextmanager
def _socket_timeout(smtp: smtplib.SMTP, seconds: float) -> Iterator[None]:
    sock = smtp.sock
    previous = sock.gettimeout() if sock is not None else None
    if sock is not None:
        sock.settimeout(seconds)
    try:
        yield
    finally:
        if sock is not None and sock.fileno() != -1:
            sock.settimeout(previous)  # QUIT must not inherit a long wait


def _describe(err: BaseException) -> str:
    detail = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    if isinstance(err, ssl.SSLCertVerificationError):
        # said in our words, so an operator (and a test) need not read OpenSSL's
        return f"the smarthost's TLS certificate was not accepted (untrusted, or issued to another name) ({detail})"
    return detail


def _close_quietly(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        smtp.close()


def _is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True  # RFC 6761 §6.3: localhost names the loopback interface
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
