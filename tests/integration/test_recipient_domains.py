"""The recipient domain check before a domain's first send, against a real DNS server on
loopback: a domain that takes no mail fails the message with no send, no answer retries."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.integration.test_outbox import Recorder, queue, rows, run_jobs, send_jobs
from waypost import runtime as wiring
from waypost.feedback.policy import DRILL_DOMAIN
from waypost.outbound.recipient_domains import DomainLookupUnavailable, RecipientDomains


@pytest.fixture
def checked_runtime(make_settings: Callable[..., Any], database_url: str, dns: Any) -> Iterator[Callable[..., Any]]:
    built: list[Any] = []

    def build(sender: Any) -> Any:
        settings = make_settings(database={"url": database_url}, dns_nameservers=[dns.nameserver], dns_timeout=3,
                                 outbound={"check_recipient_domains": True, "max_attempts": 3,
                                           "retry_base_delay": 0.01, "retry_max_delay": 0.02},
                                 guard={"compromise_checks": False})
        runtime = wiring.build(settings, sender=sender)
        built.append(runtime)
        return runtime

    yield build
    for runtime in built:
        runtime.close()


def mx_queries(dns: Any, domain: str) -> int:
    return dns.queries.count((domain + ".", "MX"))


def test_a_domain_with_an_mx_is_sent_to(checked_runtime: Any, dns: Any) -> None:
    dns.add_mx("mx-domain.test", "mail.mx-domain.test")
    sender = Recorder()
    runtime = checked_runtime(sender)
    queue(runtime, recipient="ann@mx-domain.test")

    run_jobs(runtime)

    assert [row.state for row in rows(runtime)] == ["sent"] and sender.calls == 1
    assert mx_queries(dns, "mx-domain.test") == 1


def test_a_domain_without_mx_but_with_an_address_is_its_own_mail_host(checked_runtime: Any, dns: Any) -> None:
    dns.add_aaaa("a-only.test", "2001:db8::25")  # RFC 5321 §5.1: the implicit MX
    sender = Recorder()
    runtime = checked_runtime(sender)
    queue(runtime, recipient="ann@a-only.test")

    run_jobs(runtime)

    assert [row.state for row in rows(runtime)] == ["sent"] and sender.calls == 1


def test_a_null_mx_fails_the_message_without_sending(checked_runtime: Any, dns: Any) -> None:
    dns.add_mx("nomail.test", ".", preference=0)
    dns.add_a("nomail.test", "192.0.2.1")  # an address does not undo a null MX
    sender = Recorder()
    runtime = checked_runtime(sender)
    queue(runtime, recipient="ann@nomail.test")

    run_jobs(runtime)

    (row,) = rows(runtime)
    assert row.state == "failed" and "null MX" in row.last_error and "nomail.test" in row.last_error
    assert sender.calls == 0 and row.handoff_at is None
    assert [job.state for job in send_jobs(runtime)] == ["done"]


def test_a_domain_that_does_not_exist_fails_the_message_without_sending(checked_runtime: Any, dns: Any) -> None:
    sender = Recorder()
    runtime = checked_runtime(sender)
    queue(runtime, recipient="ann@missing.test")

    run_jobs(runtime)

    (row,) = rows(runtime)
    assert row.state == "failed" and "no mail host" in row.last_error and sender.calls == 0


def test_no_dns_answer_retries_later_instead_of_failing(checked_runtime: Any, dns: Any) -> None:
    dns.fail("flaky.test")
    sender = Recorder()
    runtime = checked_runtime(sender)
    queue(runtime, recipient="ann@flaky.test")

    assert runtime.worker().run_once()

    (row,) = rows(runtime)
    assert row.state == "queued" and "flaky.test" in row.last_error and sender.calls == 0
    (job,) = send_jobs(runtime)
    assert job.state == "queued" and job.attempts == 1

    dns.recover("flaky.test")
    dns.add_mx("flaky.test", "mx.flaky.test")
    run_jobs(runtime, include_deferred=True)

    assert [row.state for row in rows(runtime)] == ["sent"] and sender.calls == 1


def test_two_messages_to_one_domain_ask_dns_once(checked_runtime: Any, dns: Any) -> None:
    dns.add_mx("busy.test", "mx.busy.test")
    sender = Recorder()
    runtime = checked_runtime(sender)
    queue(runtime, number=2, recipient="ann@busy.test")

    run_jobs(runtime)

    assert [row.state for row in rows(runtime)] == ["sent", "sent"] and sender.calls == 2
    assert mx_queries(dns, "busy.test") == 1


def test_the_drill_domain_is_exempt_and_asks_no_dns(checked_runtime: Any, dns: Any) -> None:
    sender = Recorder()
    runtime = checked_runtime(sender)
    queue(runtime, recipient=f"bounce+d1@{DRILL_DOMAIN}")

    run_jobs(runtime)

    assert [row.state for row in rows(runtime)] == ["sent"] and dns.queries == []


def test_an_answer_is_asked_again_once_its_time_is_up(dns: Any) -> None:
    from waypost.mail.resolver import make_resolver

    now = [0.0]
    domains = RecipientDomains(lambda: make_resolver((dns.nameserver,), 3.0), ttl=60, clock=lambda: now[0])
    dns.add_mx("moving.test", "mx.moving.test")
    assert domains.refusal("ann@moving.test") is None

    dns.remove("moving.test")
    dns.add_mx("moving.test", ".", preference=0)
    now[0] = 59.0
    assert domains.refusal("ann@moving.test") is None  # still the cached answer
    now[0] = 61.0
    assert "null MX" in (domains.refusal("ann@Moving.Test") or "")
    assert mx_queries(dns, "moving.test") == 2


def test_no_answer_is_never_cached(dns: Any) -> None:
    from waypost.mail.resolver import make_resolver

    domains = RecipientDomains(lambda: make_resolver((dns.nameserver,), 3.0))
    dns.fail("flaky.test")
    with pytest.raises(DomainLookupUnavailable):
        domains.refusal("ann@flaky.test")
    dns.recover("flaky.test")
    dns.add_a("flaky.test", "192.0.2.7")
    assert domains.refusal("ann@flaky.test") is None


@pytest.mark.parametrize(("transport", "setting", "checked"), [
    ("catcher", None, False), ("smtp", None, True), ("ses", None, True),
    ("catcher", True, True), ("smtp", False, False)])
def test_by_default_only_mail_that_really_leaves_is_checked(transport: str, setting: bool | None, checked: bool,
                                                           tmp_path: Any) -> None:
    """The catcher delivers nowhere: without DNS (a laptop, the demo) its replies must still
    arrive, so it asks DNS only when told to."""
    from waypost.config import load_settings

    outbound: dict[str, Any] = {"transport": transport, "check_recipient_domains": setting}
    settings = load_settings(tmp_path, outbound=outbound, base_url="https://trips.example.org",
                             mail_domain="trips.example.org")
    assert (wiring._recipient_domains(settings) is not None) is checked
