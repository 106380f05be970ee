"""The landing page, /privacy and /terms state what the running configuration does: its
retention periods, the outside services it really uses, who runs it and under which law."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import pytest
from starlette.testclient import TestClient

from waypost import runtime as wiring
from waypost.config import Settings, load_settings
from waypost.web.app import create_app
from waypost.web.legal import Change, legal_facts

PUBLIC = {"base_url": "https://trips.example.org"}  # smtp and ses need an https base_url
SMTP = {**PUBLIC, "outbound": {"transport": "smtp"}, "smarthost": {"host": "smtp.relay.example"}}
SES = {**PUBLIC, "outbound": {"transport": "ses"}, "ses": {"region": "eu-central-1"}}
QUEUE = "https://sqs.us-east-1.amazonaws.com/111122223333/waypost-feedback"
TOPIC = "arn:aws:sns:us-east-1:111122223333:waypost-feedback"
PAGES = ("/", "/privacy", "/terms")


def text_of(page: str) -> str:
    """The words a reader sees, on one line: tags dropped, entities decoded, spaces collapsed."""
    body = re.sub(r"<[^>]+>", " ", page.split("<body>", 1)[-1])
    return re.sub(r"\s+", " ", html.unescape(body)).strip()


@pytest.fixture
def pages(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., dict[str, str]]]:
    """Serve the three pages for a configuration; returns {path: visible text, path + " html": raw}."""
    built: list[Any] = []

    def serve(**overrides: Any) -> dict[str, str]:
        runtime = wiring.build(make_settings(**overrides))
        built.append(runtime)
        client = TestClient(create_app(runtime), client=("203.0.113.9", 50000))
        found: dict[str, str] = {}
        for path in PAGES:
            response = client.get(path)
            assert response.status_code == 200, path
            assert "set-cookie" not in response.headers, path
            found[path] = text_of(response.text)
            found[path + " html"] = response.text
        return found

    yield serve
    for runtime in built:
        runtime.close()


# --- legal_facts: a table of configurations and what the pages must then say -------------

def _names(settings: Settings) -> tuple[str, ...]:
    return tuple(p.name for p in legal_facts(settings).processors)


TILES = "The map tile server tile.openstreetmap.org"


@pytest.mark.parametrize("overrides, field, expected", [
    ({}, "originals", "deleted right after processing"),
    ({"journeys": {"keep_originals_days": 7}}, "originals", "kept 7 days, then deleted"),
    ({"journeys": {"keep_originals_days": 1}}, "originals", "kept 1 day, then deleted"),
    ({"journeys": {"keep_originals_days": 0.5}}, "originals", "kept 12 hours, then deleted"),
    ({"journeys": {"keep_originals_days": 7.5}}, "originals", "kept 7.5 days, then deleted"),
    ({}, "reports", "kept 30 days, then deleted"),
    ({"feedback": {"keep_reports_days": 3}}, "reports", "kept 3 days, then deleted"),
    ({"feedback": {"keep_reports_days": 0}}, "reports", "deleted right after they are read"),
    ({}, "jurisdiction", None),
    ({}, "governing_law", "These terms are governed by the law of the country where the operator is based."),
    ({"legal": {"jurisdiction": "England and Wales"}}, "governing_law",
     "These terms are governed by the law of England and Wales."),
    ({"legal": {"jurisdiction": "  "}}, "jurisdiction", None),
    ({}, "postal_address", None),
    ({"legal": {"postal_address": "1 Quay Street, Harbourtown"}}, "postal_address", "1 Quay Street, Harbourtown"),
    ({}, "contact_email", "operator@waypost.test"),
    ({"operator_email": "hello@harbour.example"}, "contact_email", "hello@harbour.example"),
    ({"journeys": {"mailbox": "trips"}}, "journeys_address", "trips@waypost.test"),
    ({}, "sends_mail", False),
    (SMTP, "sends_mail", True),
    ({}, "effective", "23 November 2026"),
    ({"legal": {"effective_date": "2027-03-01"}}, "effective_date", date(2027, 3, 1)),
    ({"legal": {"effective_date": "2027-03-01"}}, "effective", "1 March 2027"),
    ({}, "changes", (Change("23 November 2026", "First version."),)),
    ({"legal": {"effective_date": "2027-03-01"}}, "changes", (Change("1 March 2027", "First version."),)),
    ({"legal": {"changes": ["2027-03-01: originals kept 7 days", "2026-11-23: first version"]}}, "changes",
     (Change("1 March 2027", "Originals kept 7 days."), Change("23 November 2026", "First version."))),
    ({"legal": {"changes": ["Wording made plainer."]}}, "changes", (Change("", "Wording made plainer."),)),
    ({}, "sender_limit", "30 messages in an hour"),
    ({"gate": {"sender_max_messages": 5, "sender_window_minutes": 120}}, "sender_limit", "5 messages in 2 hours"),
    ({"gate": {"sender_max_messages": 1, "sender_window_minutes": 90}}, "sender_limit", "1 message in 90 minutes"),
    ({}, "share_links", "A share link works until the operator revokes it."),
    ({"journeys": {"link_days": 30}}, "share_links",
     "A share link stops working 30 days after the journey page is created, or earlier if the operator revokes it."),
    ({}, "tile_host", "tile.openstreetmap.org"),
    ({"web": {"tile_url": "https://{s}.tiles.example.net/{z}/{x}/{y}.png"}}, "tile_host", "tiles.example.net"),
    ({**PUBLIC, "web": {"tile_url": "https://trips.example.org/tiles/{z}/{x}/{y}.png"}}, "tile_host", None),
    ({"web": {"tile_url": "/tiles/{z}/{x}/{y}.png"}}, "tile_host", None),
])
def test_legal_facts(make_settings: Callable[..., Settings], overrides: dict[str, Any], field: str,
                     expected: Any) -> None:
    assert getattr(legal_facts(make_settings(**overrides)), field) == expected


@pytest.mark.parametrize("overrides, expected", [
    ({}, (TILES,)),
    (SMTP, ("The mail relay at smtp.relay.example", TILES)),
    (SES, ("Amazon Web Services (Amazon SES, region eu-central-1)", TILES)),
    ({**SES, "feedback": {"sqs_queue_url": QUEUE}},
     ("Amazon Web Services (Amazon SES, region eu-central-1)",
      "Amazon Web Services (Amazon SNS and Amazon SQS, region us-east-1)", TILES)),
    ({**SES, "feedback": {"sns_topic_arns": [TOPIC]}},
     ("Amazon Web Services (Amazon SES, region eu-central-1)", "Amazon Web Services (Amazon SNS)", TILES)),
    ({**PUBLIC, "web": {"tile_url": "https://trips.example.org/tiles/{z}/{x}/{y}.png"}}, ()),
])
def test_processors_are_the_ones_configured(make_settings: Callable[..., Settings], overrides: dict[str, Any],
                                            expected: tuple[str, ...]) -> None:
    assert _names(make_settings(**overrides)) == expected


def test_changes_come_from_the_environment_as_a_semicolon_list(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Any) -> None:
    monkeypatch.setenv("WAYPOST_LEGAL__CHANGES", "2027-03-01: originals kept 7 days; 2026-11-23: first version")
    facts = legal_facts(load_settings(tmp_path))
    assert [c.when for c in facts.changes] == ["1 March 2027", "23 November 2026"]


# --- the pages themselves ------------------------------------------------------------------

def test_landing_page_says_what_it_does_who_may_use_it_and_how_to_stop(pages: Any) -> None:
    got = pages(operator_name="Harbour Lights Ltd", operator_email="hello@harbour.example",
                mail_domain="trips.example.org", journeys={"mailbox": "trips"})
    landing = got["/"]
    assert "Email your photos to trips@trips.example.org" in landing
    assert "Waypost is run by Harbour Lights Ltd" in landing
    assert "Only people whom Harbour Lights Ltd has added to the list of allowed senders" in landing
    assert "Mail from anyone else is not processed and gets no answer" in landing
    assert "one reply to each message you send" in landing
    assert "never sends newsletters, marketing or advertising" in landing
    assert "Use the unsubscribe link at the bottom of any message" in landing
    assert "write to hello@harbour.example" in landing
    assert "taken off the list of allowed senders and no more mail is sent to you" in landing
    assert 'href="/privacy"' in got["/ html"] and 'href="/terms"' in got["/ html"]


def test_every_page_has_a_description_and_no_inline_script_or_style(pages: Any) -> None:
    got = pages()
    for path in PAGES:
        raw = got[path + " html"]
        assert re.search(r'<meta name="description" content="[^"]{40,}">', raw), path
        assert "<script" not in raw and "<style" not in raw and " style=" not in raw, path
    assert "Effective 23 November 2026." in got["/privacy"]
    assert "Effective 23 November 2026." in got["/terms"]


def test_catcher_mode_names_no_outside_sender(pages: Any) -> None:
    got = pages()
    for path in PAGES:
        assert "Amazon" not in got[path] and "S3" not in got[path] and "relay" not in got[path], path
    assert "no mail leaves the machine" in got["/privacy"]
    assert "The map tile server tile.openstreetmap.org" in got["/privacy"]


def test_smtp_mode_names_the_relay_and_nothing_of_amazon(pages: Any) -> None:
    privacy = pages(**SMTP)["/privacy"]
    assert "The mail relay at smtp.relay.example. Sends our replies on to your mail provider." in privacy
    assert "Replies are sent through the mail relay at smtp.relay.example." in privacy
    assert "Amazon" not in privacy and "test mode" not in privacy


def test_ses_mode_names_ses_and_its_region_and_sqs_only_when_configured(pages: Any) -> None:
    plain = pages(**SES)["/privacy"]
    assert "Amazon Web Services (Amazon SES, region eu-central-1). Sends our replies." in plain
    assert "SQS" not in plain and "SNS" not in plain and "S3" not in plain and "relay" not in plain

    queued = pages(**SES, feedback={"sqs_queue_url": QUEUE})["/privacy"]
    assert "Amazon Web Services (Amazon SNS and Amazon SQS, region us-east-1)." in queued
    assert "Carries delivery reports" in queued and "S3" not in queued


def test_retention_periods_are_the_configured_ones(pages: Any) -> None:
    default = pages()
    assert "deleted right after processing" in default["/"]
    assert "How long: Deleted right after processing." in default["/privacy"]
    assert "The reports themselves are kept 30 days, then deleted" in default["/privacy"]
    assert "kept 7 days" not in default["/privacy"] and "kept 3 days" not in default["/privacy"]

    longer = pages(journeys={"keep_originals_days": 7}, feedback={"keep_reports_days": 3})
    assert "The mail you sent, with the original photos, is kept 7 days, then deleted." in longer["/"]
    assert "How long: Kept 7 days, then deleted." in longer["/privacy"]
    assert "The reports themselves are kept 3 days, then deleted" in longer["/privacy"]
    assert "right after processing" not in longer["/privacy"]
    assert "The reports themselves are kept 30 days" not in longer["/privacy"]


def test_every_store_of_personal_data_is_stated_with_its_configured_period(pages: Any) -> None:
    default = pages()["/privacy"]
    for stated in ("The mail Waypost sends you, as sent. In this setup replies are not delivered: each is kept as "
                   "a file on this server. Why: To show the operator what was sent if delivery fails. How long: "
                   "Kept 30 days after it was sent, then deleted. The files of this test setup go at the same "
                   "time.",
                   "How long: Kept 90 days after the mail itself was deleted, then deleted.",
                   "(unsubscribe, postmaster, abuse and the operator's contact), as it arrived. Why: So the operator "
                   "can read and act on it. How long: Kept 30 days after it arrived, then deleted.",
                   "How long: Visits: kept 30 days after the visit, then deleted. Everything else: kept 180 days "
                   "after it was written, then deleted.",
                   "The report as each provider sent it: kept 30 days after it came, then deleted.",
                   "How long: Until the journey is deleted."):
        assert stated in default
    assert "after it last changed" not in default

    changed = pages(retention={"sent_raw_days": 2, "message_rows_days": "keep", "service_mail_days": 0,
                               "audit_views_days": 0.5, "audit_days": 365, "feedback_raw_days": 10,
                               "idle_journeys_days": 400})["/privacy"]
    for stated in ("How long: Kept 2 days after it was sent, then deleted.",
                   "fix problems. How long: Until the operator deletes it.",
                   "act on it. How long: Deleted at the next clean-up.",
                   "Visits: kept 12 hours after the visit, then deleted. Everything else: kept 365 days",
                   "The report as each provider sent it: kept 10 days after it came",
                   "How long: Until the journey is deleted, or 400 days after it last changed, whichever comes first."):
        assert stated in changed
    assert "Kept 30 days after it was sent" not in changed and "kept 180 days" not in changed


def test_exports_and_erasure_requests_are_stated_with_their_configured_periods(pages: Any) -> None:
    default = pages()["/privacy"]
    assert "How long: Kept 7 days after it was made, the time its link works, then deleted" in default
    assert "How long: Until you confirm it, or 7 days without an answer." in default
    changed = pages(journeys={"export_link_days": 2, "erasure_confirm_days": 3})["/privacy"]
    assert "How long: Kept 2 days after it was made" in changed
    assert "How long: Until you confirm it, or 3 days without an answer." in changed
    assert "Kept 7 days after it was made" not in changed


def test_refused_and_unreadable_mail_are_kept_the_configured_periods(pages: Any) -> None:
    default = pages()["/privacy"]
    assert ("Mail we refuse is kept for the operator to check for 7 days, and mail we cannot read for 30 days, "
            "then deleted") in default
    assert "until the operator deletes it" not in default

    shorter = pages(retention={"refused_raw_days": 1, "dead_raw_days": 0.5})["/privacy"]
    assert "Mail we refuse is kept for the operator to check for 1 day, and mail we cannot read for 12 hours" in shorter


def test_operator_jurisdiction_address_and_history_come_from_legal_settings(pages: Any) -> None:
    unset = pages()
    for path in ("/privacy", "/terms"):
        assert "the law of the country where the operator is based" in unset[path]
        assert "England" not in unset[path] and "Post:" not in unset[path] and "by post" not in unset[path]
        assert "23 November 2026: First version." in unset[path]

    got = pages(operator_name="Harbour Lights Ltd", operator_email="hello@harbour.example",
                legal={"jurisdiction": "England and Wales", "postal_address": "1 Quay Street, Harbourtown",
                       "effective_date": "2027-03-01",
                       "changes": ["2027-03-01: originals kept 7 days", "2026-11-23: first version"]})
    terms, privacy = got["/terms"], got["/privacy"]
    assert "These terms are governed by the law of England and Wales." in terms
    assert "fall under the law of England and Wales" in privacy
    assert "country where the operator is based" not in terms + privacy
    assert "Post: 1 Quay Street, Harbourtown" in privacy
    assert "by post: 1 Quay Street, Harbourtown" in terms
    for page in (terms, privacy):
        assert "Effective 1 March 2027." in page
        assert "Harbour Lights Ltd" in page and "hello@harbour.example" in page
        newest, oldest = page.index("1 March 2027: Originals kept 7 days."), page.index(
            "23 November 2026: First version.")
        assert newest < oldest


def test_pages_change_when_the_configuration_changes(pages: Any) -> None:
    before = pages()
    after = pages(**SES, journeys={"keep_originals_days": 2}, legal={"jurisdiction": "Scotland"})
    for path in PAGES:
        assert before[path] != after[path], path
    assert "Amazon SES" in after["/privacy"] and "Amazon SES" not in before["/privacy"]
    assert "kept 2 days, then deleted" in after["/"]
    assert "the law of Scotland" in after["/terms"]


def test_share_links_and_terms_essentials(pages: Any) -> None:
    terms = pages(journeys={"link_days": 30})["/terms"]
    assert "Anyone who has the link to a journey page can see the journey" in terms
    assert "A share link stops working 30 days after the journey page is created" in terms
    assert "To have a link revoked, write to operator@waypost.test" in terms
    assert "There is no guarantee that it is always available" in terms
    assert "without their consent" in terms


def test_configured_text_is_escaped(pages: Any) -> None:
    got = pages(operator_name="Ann & Bob <b>Trips</b>", legal={"postal_address": "<script>x</script>"})
    for path in PAGES:
        assert "<b>Trips</b>" not in got[path + " html"] and "<script>" not in got[path + " html"], path
        assert "Ann &amp; Bob &lt;b&gt;Trips&lt;/b&gt;" in got[path + " html"], path
