"""The public pages an SES reviewer looks for: what the service does (/), the privacy notice
(/privacy) and the terms (/terms).

Everything these pages state about who runs the service, what is kept, for how long and who
else sees it comes from :func:`legal_facts`, a pure function of the running configuration:
change a setting and the pages change with it, so they never describe a setup that is not
the one running.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from waypost.config import Settings
from waypost.runtime import Runtime

Render = Callable[..., Response]  # page(request, template, context, status=..., extra=...)

SQS_URL = re.compile(r"https://sqs\.([a-z0-9-]+)\.amazonaws\.com")
DATED_CHANGE = re.compile(r"^\s*(\d{4}-\d{2}-\d{2})\s*[:\-–—]\s*(.+)$")


@dataclass(frozen=True)
class Kept:
    """One kind of data Waypost holds: what it is, why, and for how long."""

    what: str
    why: str
    how_long: str


@dataclass(frozen=True)
class Processor:
    """Someone outside this server who receives personal data while the service runs."""

    name: str
    purpose: str
    receives: str


@dataclass(frozen=True)
class Change:
    when: str  # "23 November 2026", or "" when the entry names no date
    what: str


@dataclass(frozen=True)
class LegalFacts:
    operator_name: str
    contact_email: str
    postal_address: str | None
    jurisdiction: str | None
    governing_law: str  # a whole sentence
    journeys_address: str
    reply_address: str
    site_url: str
    sends_mail: bool  # False in catcher mode: replies stay on this server
    sending: str  # how replies leave, one sentence
    sender_limit: str  # "30 messages in an hour"
    originals: str  # "deleted right after processing" | "kept 7 days, then deleted"
    reports: str
    share_links: str
    kept: tuple[Kept, ...]
    processors: tuple[Processor, ...]
    tile_host: str | None  # None: the map tiles come from this site
    rights: tuple[str, ...]
    effective_date: date
    effective: str  # "23 November 2026"
    changes: tuple[Change, ...]


def legal_facts(settings: Settings) -> LegalFacts:
    """What the landing page, /privacy and /terms state, derived from the settings alone."""
    legal = settings.legal
    originals_days = settings.journeys.keep_originals_days
    reports_days = settings.feedback.keep_reports_days
    originals = ("deleted right after processing" if originals_days == 0
                 else f"kept {_days(originals_days)}, then deleted")
    reports = ("deleted right after they are read" if reports_days == 0
               else f"kept {_days(reports_days)}, then deleted")
    jurisdiction = (legal.jurisdiction or "").strip() or None
    governing_law = (f"These terms are governed by the law of {jurisdiction}." if jurisdiction else
                     "These terms are governed by the law of the country where the operator is based.")
    link_days = settings.journeys.link_days
    share_links = ("A share link works until the operator revokes it." if link_days == 0 else
                   f"A share link stops working {_days(link_days)} after the journey page is created, "
                   "or earlier if the operator revokes it.")
    tile_host = _tile_host(settings)
    return LegalFacts(
        operator_name=settings.operator_name,
        contact_email=settings.operator_address,
        postal_address=(legal.postal_address or "").strip() or None,
        jurisdiction=jurisdiction,
        governing_law=governing_law,
        journeys_address=settings.journeys_address,
        reply_address=settings.reply_address,
        site_url=settings.public_base_url,
        sends_mail=settings.outbound.transport != "catcher",
        sending=_sending(settings),
        sender_limit=(f"{settings.gate.sender_max_messages} "
                      f"{'message' if settings.gate.sender_max_messages == 1 else 'messages'} "
                      f"in {_minutes(settings.gate.sender_window_minutes)}"),
        originals=originals,
        reports=reports,
        share_links=share_links,
        kept=_kept(settings, originals, reports),
        processors=_processors(settings, tile_host),
        tile_host=tile_host,
        rights=(
            f"To get a copy of what is held about you, write to {settings.operator_address}.",
            f"To have it deleted (your address, your journeys and their photos), write to "
            f"{settings.operator_address}.",
            "Every message we send has an unsubscribe link. Using it takes your address off the list "
            "of allowed senders and stops all mail to you at once.",
            "The operator can revoke a share link at any time; ask if you want one revoked.",
        ),
        effective_date=legal.effective_date,
        effective=_date(legal.effective_date),
        changes=_changes(legal.changes, legal.effective_date),
    )


def _kept(settings: Settings, originals: str, reports: str) -> tuple[Kept, ...]:
    outbox = ("" if settings.outbound.transport != "catcher" else
              " In this setup replies are not delivered: each is kept as a file on this server.")
    kept = settings.retention
    return (
        Kept("Email addresses: the list of senders the operator allows, and the address of each "
             "person who writes in.",
             "To know whom to answer, and to answer only them.",
             "Until the address is removed from the list or you ask us to delete it."),
        Kept("The mail you send, as it arrived, with your original photos and all their hidden data.",
             "To read the photos once.",
             f"{originals.capitalize()}. {_unanswered(settings)}"),
        Kept("Small copies of your photos (two sizes), with all hidden camera data removed.",
             "To show them on your journey page.",
             _journey_life(settings)),
        Kept("Where and when each photo was taken, read from the photo, and the place names and time "
             "zones worked out from that on this server.",
             "To draw your route and timeline.",
             _journey_life(settings)),
        Kept("The mail Waypost sends you, as sent." + outbox,
             "To show the operator what was sent if delivery fails.",
             _kept_for(kept.sent_raw_days, "after it was sent")
             + (" The files of this test setup go at the same time." if outbox else "")),
        Kept("A log of mail received and sent: addresses, subjects, times and whether delivery worked.",
             "To answer you once only, to stay within sending limits and to fix problems.",
             _kept_for(kept.message_rows_days, "after the mail itself was deleted") + " An entry that a journey "
             "still needs stays as long as the journey."),
        Kept("Mail to the service's own addresses (unsubscribe, postmaster, abuse and the operator's contact), "
             "as it arrived.",
             "So the operator can read and act on it.",
             _kept_for(kept.service_mail_days, "after it arrived")),
        Kept("A log of what was done: changes made by the operator, deleted journeys, and each visit to a journey "
             "page with the visitor's network only (the IP address with its last part removed).",
             "To keep the service safe and to answer questions about it.",
             f"Visits: {_kept_for(kept.audit_views_days, 'after the visit').lower()} "
             f"Everything else: {_kept_for(kept.audit_days, 'after it was written').lower()}"),
        Kept("The do-not-send list: addresses that unsubscribed, bounced or complained, with the reason.",
             "It is what stops mail to those addresses.",
             "Until the address is removed from it. Deleting it would let mail reach you again."),
        Kept("A copy of everything we hold about you, when you ask for it (\u201cexport\u201d): a zip file.",
             "So you can download your data.",
             f"Kept {_days(settings.journeys.export_link_days)} after it was made, the time its link works, "
             "then deleted; each download is logged with the downloader's network only."),
        Kept("Your request to erase your data, until you confirm it.",
             "So that only your \u201cyes\u201d in reply to our question erases anything.",
             f"Until you confirm it, or {_days(settings.journeys.erasure_confirm_days)} without an answer. Once "
             "erased, only a scrambled form of your address that cannot be read back stays on the do-not-send list, "
             "if it was on it."),
        Kept("Delivery feedback: bounce and complaint reports from mail providers about our mail.",
             "To stop writing to addresses that do not work or do not want our mail.",
             f"The reports themselves are {reports}; what they tell us goes onto the do-not-send list. "
             f"The report as each provider sent it: {_kept_for(kept.feedback_raw_days, 'after it came').lower()}"),
    )


def _kept_for(days: float | None, after: str) -> str:
    """A retention.* period as a sentence: None keeps, 0 goes at the next clean-up."""
    if days is None:
        return "Until the operator deletes it."
    if days == 0:
        return "Deleted at the next clean-up."
    return f"Kept {_days(days)} {after}, then deleted."


def _journey_life(settings: Settings) -> str:
    idle = settings.retention.idle_journeys_days
    if idle is None:
        return "Until the journey is deleted."
    return f"Until the journey is deleted, or {_days(idle)} after it last changed, whichever comes first."


def _unanswered(settings: Settings) -> str:
    """How long refused and unreadable mail stays (retention.*): the operator checks it first."""
    refused, dead = settings.retention.refused_raw_days, settings.retention.dead_raw_days
    return (f"Mail we refuse is kept for the operator to check for {_period(refused)}, and mail we cannot "
            f"read for {_period(dead)}, then deleted; a record that it came and why it was not "
            "answered stays.")


def _period(days: float) -> str:
    return _days(days) if days else "no longer than the next clean-up"


def _processors(settings: Settings, tile_host: str | None) -> tuple[Processor, ...]:
    found: list[Processor] = []
    transport = settings.outbound.transport
    if transport == "ses":
        found.append(Processor(
            f"Amazon Web Services (Amazon SES, region {settings.ses.region})",
            "Sends our replies.",
            "the address each reply goes to and the reply itself."))
    elif transport == "smtp":
        found.append(Processor(
            f"The mail relay at {settings.smarthost.host}",
            "Sends our replies on to your mail provider.",
            "the address each reply goes to and the reply itself."))
    feedback = settings.feedback
    if feedback.sqs_queue_url:
        region = SQS_URL.match(feedback.sqs_queue_url)
        found.append(Processor(
            f"Amazon Web Services (Amazon SNS and Amazon SQS, region "
            f"{region.group(1) if region else settings.ses.region})",
            "Carries delivery reports (delivered, bounced, complaint) from Amazon SES to us.",
            "the address a reply went to and what happened to it."))
    elif feedback.sns_topic_arns:
        found.append(Processor(
            "Amazon Web Services (Amazon SNS)",
            "Carries delivery reports (delivered, bounced, complaint) from Amazon SES to us.",
            "the address a reply went to and what happened to it."))
    if tile_host is not None:
        found.append(Processor(
            f"The map tile server {tile_host}",
            "Supplies the map images on journey pages.",
            "the IP address of whoever opens a journey page, and which part of the map is shown. "
            "It is not told the page's address."))
    return tuple(found)


def _sending(settings: Settings) -> str:
    transport = settings.outbound.transport
    if transport == "ses":
        return f"Replies are sent through Amazon SES (region {settings.ses.region})."
    if transport == "smtp":
        return f"Replies are sent through the mail relay at {settings.smarthost.host}."
    return ("This server runs in test mode: replies are kept as files on this server and no mail "
            "leaves the machine.")


def _tile_host(settings: Settings) -> str | None:
    """The host the visitor's browser fetches map tiles from; None when it is this site."""
    tiles = urlsplit(settings.web.tile_url.replace("{s}.", "").replace("{s}", "a"))
    if not tiles.hostname:
        return None
    own = urlsplit(settings.public_base_url).hostname
    return None if tiles.hostname == own else tiles.hostname


def _changes(entries: tuple[str, ...], effective: date) -> tuple[Change, ...]:
    if not entries:
        return (Change(_date(effective), "First version."),)
    changes = []
    for entry in entries:
        dated = DATED_CHANGE.match(entry)
        when = _iso_date(dated.group(1)) if dated else None
        if dated and when is not None:
            changes.append(Change(_date(when), _sentence(dated.group(2))))
        else:
            changes.append(Change("", _sentence(entry)))
    return tuple(changes)


def _iso_date(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _sentence(text: str) -> str:
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _date(when: date) -> str:
    return f"{when.day} {when:%B %Y}"


def _days(days: float) -> str:
    """A retention period as people say it: "1 day", "30 days", "12 hours", "7.5 days"."""
    if days < 1:
        hours = days * 24
        if hours < 1:
            return _count(round(hours * 60) or 1, "minute")
        return _count(hours, "hour")
    return _count(days, "day")


def _minutes(minutes: float) -> str:
    if minutes == 60:
        return "an hour"
    if minutes % 60 == 0:
        return _count(minutes / 60, "hour")
    return _count(minutes, "minute")


def _count(value: float, unit: str) -> str:
    number = f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{number} {unit}" + ("" if number == "1" else "s")


def legal_routes(runtime: Runtime, page: Render) -> list[Route]:
    facts = legal_facts(runtime.settings)

    async def landing(request: Request) -> Response:
        return page(request, "landing.html", {"facts": facts})

    async def privacy(request: Request) -> Response:
        return page(request, "privacy.html", {"facts": facts})

    async def terms(request: Request) -> Response:
        return page(request, "terms.html", {"facts": facts})

    return [Route("/", landing), Route("/privacy", privacy), Route("/terms", terms)]
