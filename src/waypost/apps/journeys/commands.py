"""Commands by mail (``mail/commands.py`` reads them): what a person who passed the gate can ask
of Waypost in a mail without photos, to the journeys address or in reply to any of our mails.

Each command runs inside the transaction that records its mail as processed, and is answered
through the outbox under a key made of the mail's id: a re-run after a crash redoes the effect
and queues the answer once (invariant 2). A mail without photos and without a command gets
``help``. Commands about one journey (rename, new link, revoke link, delete) work in that
journey's thread: a reply to one of its mails, or a mail to its reply address.

``stop`` is a person's own leaving: suppressed (UNSUBSCRIBE, source ``stop-by-mail``), off the
allowlist, one confirmation (the outbox lets that one message through), then silence. Only their
own leaving, by ``stop`` or by the unsubscribe link of our mail (one-click or mailto), can be
undone by the person (``start``); the gate lets them through for it alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Connection

from waypost import failpoints
from waypost.apps import people_requests
from waypost.apps.journeys import privacy_zones, repository
from waypost.apps.journeys.build import Locate, RouteRules
from waypost.mail.addresses import AddressError, address_key
from waypost.mail.commands import Command, Verb, read_command
from waypost.outbound import suppression
from waypost.outbound.compose import Composer, Draft, reply_subject
from waypost.outbound.outbox import OutboundMessage, Outbox
from waypost.pipeline.allowlist import Allowlist
from waypost.pipeline.router import InboundMail
from waypost.store.blobs import BlobStore

log = logging.getLogger(__name__)
STREAM = "journeys"
# what a stop records beside the suppression, so that start knows what to give back
ENTRY_REMOVED = "own stop by mail; allowlist entry removed"
ENTRY_KEPT = "own stop by mail; no allowlist entry of their own (allowed by domain)"
# the commands the help lists, in its order: (what to write, what it does)
COMMANDS = (
    ("help", "this message"),
    ("list", "your journeys, with their links, dates and photo counts"),
    ("rename NEW TITLE", "in a journey's thread: give the journey a new title"),
    ("new link", "in a journey's thread: a new share link; the old one stops working"),
    ("revoke link", "in a journey's thread: turn the share link off (“new link” gives one again)"),
    ("delete", "in a journey's thread: delete the journey, its photos and images; its link stops working"),
    ("stop", "no more mail from this service, and your address off its list (also: unsubscribe)"),
    ("start", "undo your own stop"),
    ("hide home PHOTO or PLACE", "in a journey's thread: keep the place of that photo (“hide home photo 3”) "
                                 "or that place (“hide home Belém”) off your share links"),
    ("export", "a zip of everything we hold about you, mailed as a link that works for a few days"),
    ("delete my data", "erase everything we hold about you (we ask you to confirm first; also: forget me)"),
)
NEEDS_JOURNEY = (Verb.RENAME, Verb.NEW_LINK, Verb.REVOKE_LINK, Verb.DELETE, Verb.HIDE)


@dataclass(frozen=True)
class Request:
    mail: InboundMail
    command: Command | None
    journey: repository.JourneyRef | None
    ignored: list[str] = field(default_factory=list)  # attachments that are not photos
    notes: list[str] = field(default_factory=list)  # what the mail reader left out


@dataclass(frozen=True)
class Answer:
    template: str
    subject: str
    context: dict[str, Any]
    journey: repository.JourneyRef | None = None  # the thread the answer belongs to
    key_prefix: str = "journeys-reply-"
    # told the queued answer's Message-ID and outbound row, in the same transaction
    queued: Callable[[Connection, str, int], None] | None = None


def command_of(mail: InboundMail) -> Command | None:
    return read_command(mail.message.subject, mail.message.text)


def stopped_by_self(conn: Connection, address: str) -> bool:
    """Whether ``address`` left by their own stop by mail or unsubscribe link (what ``start`` may undo)."""
    return any(suppression.left_by_self(entry) for entry in _entries(conn, address))


def _entries(conn: Connection, address: str) -> list[suppression.Suppression]:
    return [entry for key in _keys(address) if (entry := suppression.lookup(conn, key)) is not None]


def _keys(address: str) -> list[str]:
    """The address as written and without its +tag: the gate treats both as the person."""
    try:
        return list(dict.fromkeys((address.lower(), address_key(address))))
    except AddressError:
        return [address.lower()]


class CommandDesk:
    def __init__(self, outbox: Outbox, composer: Composer, blobs: BlobStore, *, base_url: str,
                 journeys_address: str, mailbox: str, mail_domain: str, envelope_sender: str,
                 erasure_wait: timedelta = timedelta(days=7), rules: RouteRules | None = None,
                 locate: Locate | None = None) -> None:
        self.rules, self.locate = rules, locate  # to read a journey as its owner's mail numbers it (hide home)
        self.outbox = outbox
        self.composer = composer
        self.blobs = blobs
        self.base_url = base_url
        self.journeys_address = journeys_address
        self.mailbox = mailbox
        self.mail_domain = mail_domain
        self.envelope_sender = envelope_sender
        self.erasure_wait = erasure_wait
        self.verbs: dict[Verb, Callable[[Connection, Request], Answer | None]] = {
            Verb.HELP: self._help, Verb.LIST: self._list, Verb.RENAME: self._rename,
            Verb.NEW_LINK: self._new_link, Verb.REVOKE_LINK: self._revoke_link, Verb.DELETE: self._delete,
            Verb.STOP: self._stop, Verb.START: self._start,
            Verb.EXPORT: self._export, Verb.ERASE: self._erase, Verb.YES: self._yes, Verb.HIDE: self._hide,
        }

    def answer(self, conn: Connection, request: Request) -> str:
        """Carry out the mail's command (help when it has none) and queue its one answer, in the
        caller's transaction (``export``'s answer comes from its job). Returns the note recorded
        with the mail."""
        verb = request.command.verb if request.command else Verb.HELP
        answer: Answer | None
        if verb in NEEDS_JOURNEY and request.journey is None:
            answer = Answer("journeys/which_journey", "Which journey?", {"command": verb.value})
        else:
            answer = self.verbs[verb](conn, request)
        failpoints.hit("commands.after_effect")
        if answer is not None:
            self._queue(conn, request.mail, answer)
        return f"handled by journeys: command {verb.value}" if request.command else "handled by journeys: help"

    # -- the commands ------------------------------------------------------------------

    def _help(self, conn: Connection, request: Request) -> Answer:
        asked = request.command is not None
        subject = request.mail.message.subject
        if asked:
            title = "What you can do by mail"
        else:
            title = f"No photos found in “{subject}”" if subject else "No photos found in your message"
        return Answer("journeys/help", title, {"asked": asked, "commands": COMMANDS, "ignored": request.ignored,
                                               "notes": request.notes})

    def _list(self, conn: Connection, request: Request) -> Answer:
        found = [j for key in _keys(request.mail.sender) for j in repository.list_journeys(conn, owner=key, limit=200)]
        rows = sorted({j.id: j for j in found}.values(), key=lambda j: j.id, reverse=True)
        entries = [{"title": j.title, "created": j.created, "photos": j.photos, "state": j.state(),
                    "url": self._url(j.token) if j.state() == "live" else None} for j in rows]
        return Answer("journeys/list", "Your journeys", {"entries": entries})

    def _rename(self, conn: Connection, request: Request) -> Answer:
        journey = _required(request)
        assert request.command is not None
        repository.rename(conn, journey.id, request.command.argument)
        renamed = repository.JourneyRef(journey.id, journey.token, journey.reply_token, journey.owner_address,
                                        request.command.argument)
        return Answer("journeys/renamed", f"Renamed: {renamed.title}",
                      {"old_title": journey.title, "title": renamed.title, "url": self._live_url(conn, journey)},
                      renamed)

    def _new_link(self, conn: Connection, request: Request) -> Answer:
        journey = _required(request)
        token = repository.rotate(conn, journey.id)
        return Answer("journeys/link_new", f"A new link for {journey.title}",
                      {"title": journey.title, "url": self._url(token)}, journey)

    def _hide(self, conn: Connection, request: Request) -> Answer:
        journey = _required(request)
        assert request.command is not None
        where = request.command.argument
        view = repository.load_view(conn, journey.token, rules=self.rules, locate=self.locate)
        assert view is not None  # the thread was found in this transaction
        done = privacy_zones.hide_home(conn, view, journey.owner_address, where)
        context = {"title": journey.title, "where": where, "places": done.places, "url": self._live_url(conn, journey),
                   "hidden": [photo.number for photo in done.hidden], "radius": privacy_zones.DEFAULT_RADIUS_M}
        if done.zone is None:
            return Answer("journeys/hide_where", "Which place?", context, journey)
        log.info("%s set a privacy zone from journey %s", journey.owner_address, journey.id)
        return Answer("journeys/hidden", f"Hidden from your share links: {where}", context, journey)

    def _revoke_link(self, conn: Connection, request: Request) -> Answer:
        journey = _required(request)
        repository.revoke(conn, journey.id)
        return Answer("journeys/link_revoked", f"Link turned off: {journey.title}", {"title": journey.title}, journey)

    def _delete(self, conn: Connection, request: Request) -> Answer:
        journey = _required(request)
        deleted = repository.delete_journey(conn, journey.id)
        for key in deleted.blob_keys:
            # a rollback after this re-runs the job, which deletes the same rows and finds these gone
            self.blobs.delete(key)
        log.info("journey %s deleted by its owner (%d photos)", journey.id, deleted.photos)
        return Answer("journeys/deleted", f"Deleted: {journey.title}", {"title": journey.title,
                                                                        "photos": deleted.photos})

    def _stop(self, conn: Connection, request: Request) -> Answer:
        sender = request.mail.sender
        removed = any([Allowlist.forget(conn, key) for key in _keys(sender)])
        for key in _keys(sender):
            suppression.add(conn, key, suppression.Reason.UNSUBSCRIBE, suppression.STOP_BY_MAIL,
                            detail=ENTRY_REMOVED if removed else ENTRY_KEPT, by=f"{sender} (own stop by mail)")
        log.info("%s stopped all mail by their own command", sender)
        return Answer("journeys/stopped", "You will get no more mail from us", {},
                      key_prefix=suppression.STOP_CONFIRMATION)

    def _start(self, conn: Connection, request: Request) -> Answer:
        sender = request.mail.sender
        entries = [e for e in _entries(conn, sender) if suppression.left_by_self(e)]
        if not entries:
            return Answer("journeys/started", "You are on our list", {"returned": False})
        for entry in entries:
            suppression.remove(conn, entry.address, by=f"{sender} (own start by mail)",
                               note="undoes their own stop" if entry.source == suppression.STOP_BY_MAIL
                               else f"undoes their own unsubscribe ({entry.source})")
        if any(entry.detail == ENTRY_REMOVED or (entry.detail or "").endswith(suppression.LEFT_ALLOWLIST)
               for entry in entries):
            Allowlist(conn.engine).add(address_key(sender), "back by their own start by mail", conn=conn)
        log.info("%s came back by their own start", sender)
        return Answer("journeys/started", "Welcome back", {"returned": True})

    def _export(self, conn: Connection, request: Request) -> None:
        people_requests.ask_export(conn, request.mail.sender, request.mail.id)
        log.info("%s asked for an export of their data", request.mail.id)

    def _erase(self, conn: Connection, request: Request) -> Answer:
        mail = request.mail

        def keep(conn: Connection, message_id: str, outbound_id: int) -> None:
            people_requests.ask_erasure(conn, mail.sender, mail.id, message_id, self.erasure_wait)

        return Answer("journeys/erase_confirm", "Shall we erase everything we hold about you?",
                      {"days": round(self.erasure_wait / timedelta(days=1))}, queued=keep)

    def _yes(self, conn: Connection, request: Request) -> Answer:
        message = request.mail.message
        thread = [*message.references, *([message.in_reply_to] if message.in_reply_to else [])]
        if people_requests.confirming(conn, request.mail.sender, thread) is None:
            return Answer("journeys/nothing_to_confirm", "Nothing to confirm", {})
        confirmed = people_requests.erase_confirmed(conn, self.blobs, request.mail.sender, request.mail.id)
        log.info("%s erased a person at their own confirmed request", request.mail.id)
        return Answer("journeys/erased", "Everything we held about you is erased", {},
                      key_prefix=people_requests.FAREWELL,
                      queued=lambda conn, _, outbound_id: people_requests.queue_farewell_job(conn, confirmed,
                                                                                              outbound_id))

    # -- answering -----------------------------------------------------------------------

    def _url(self, token: str) -> str:
        return f"{self.base_url}/j/{token}"

    def _live_url(self, conn: Connection, journey: repository.JourneyRef) -> str | None:
        return self._url(journey.token) if repository.link_is_live(conn, journey.id) else None

    def _queue(self, conn: Connection, mail: InboundMail, answer: Answer) -> None:
        journey = answer.journey
        reply_to = f"{self.mailbox}+{journey.reply_token}@{self.mail_domain}" if journey else None
        context = {**answer.context, "journeys_address": self.journeys_address}
        # in the person's thread, as a person would answer (Gmail groups a thread by subject too)
        subject = reply_subject(mail.message.subject) if mail.message.subject.strip() else answer.subject
        composed = self.composer.compose(Draft(
            template=answer.template, to=mail.sender, subject=subject, stream=STREAM, context=context,
            in_reply_to=mail.message.message_id, references=mail.message.references, reply_to=reply_to))
        outbound_id = self.outbox.queue_message(conn, OutboundMessage(
            idempotency_key=f"{answer.key_prefix}{mail.id}", stream=STREAM, recipient=mail.sender,
            envelope_sender=self.envelope_sender, subject=composed.subject, message_id=composed.message_id,
            raw=composed.raw,
        ))
        if answer.queued is not None:
            answer.queued(conn, composed.message_id, outbound_id)
        if journey is not None:
            repository.link_message(conn, journey.id, direction="out", message_id_header=composed.message_id)


def _required(request: Request) -> repository.JourneyRef:
    assert request.journey is not None  # answer() sends commands without a journey elsewhere
    return request.journey
