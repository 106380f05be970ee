"""Build transactional messages from templates: text and HTML from one context, with the
headers every Waypost message carries (invariant 5)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import jinja2

from waypost.config import Settings
from waypost.mail.addresses import format_mailbox
from waypost.store.models import utcnow

LAYOUTS = Path(__file__).with_name("templates")


@dataclass(frozen=True)
class Draft:
    template: str  # "<app>/<name>": renders <name>.txt and <name>.html
    to: str
    subject: str
    context: dict[str, Any] = field(default_factory=dict)
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    reply_to: str | None = None  # where the person's answer should go, when not to From


@dataclass(frozen=True)
class Composed:
    raw: bytes
    message_id: str
    subject: str


class Composer:
    def __init__(self, settings: Settings, template_dirs: list[Path],
                 filters: dict[str, Callable[..., str]] | None = None) -> None:
        self.settings = settings
        loader = jinja2.FileSystemLoader([LAYOUTS, *template_dirs])
        self.text_env = jinja2.Environment(loader=loader, autoescape=False, undefined=jinja2.StrictUndefined,
                                           keep_trailing_newline=True)
        self.html_env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)
        for env in (self.text_env, self.html_env):
            env.filters.update(filters or {})

    def compose(self, draft: Draft) -> Composed:
        """Render and assemble; raises jinja2.TemplateError before anything is queued."""
        context = {**self._common_context(), **draft.context, "subject": draft.subject}
        text = self.text_env.get_template(f"{draft.template}.txt").render(context)
        html = self.html_env.get_template(f"{draft.template}.html").render(context)
        message = EmailMessage()
        message_id = make_msgid(domain=self.settings.mail_domain)
        message["From"] = format_mailbox(self.settings.reply_from_name, self.settings.reply_address)
        message["To"] = draft.to
        if draft.reply_to:
            message["Reply-To"] = draft.reply_to
        message["Subject"] = draft.subject
        message["Date"] = format_datetime(utcnow())
        message["Message-ID"] = message_id
        if draft.in_reply_to:
            message["In-Reply-To"] = draft.in_reply_to
            message["References"] = " ".join((*draft.references, draft.in_reply_to)[-20:])
        # RFC 3834 §5: an automatic response says so, which stops auto-reply loops.
        message["Auto-Submitted"] = "auto-replied"
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        return Composed(message.as_bytes(), message_id, draft.subject)

    def _common_context(self) -> dict[str, Any]:
        base = self.settings.public_base_url
        return {
            "operator_name": self.settings.operator_name,
            "operator_email": self.settings.operator_address,
            "privacy_url": f"{base}/privacy",
            "terms_url": f"{base}/terms",
            "base_url": base,
        }
