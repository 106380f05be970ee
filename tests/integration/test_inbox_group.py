"""The inbox's group commit end to end: messages accepted at the same moment get their rows and
jobs in one transaction, written with one statement each; their blobs' folder is fsynced once
for the group, before the commit, never by each blob's own write; a folder that cannot be synced
costs its message a temporary failure and leaves nothing behind. On SQLite and PostgreSQL."""

from __future__ import annotations

import errno
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import wait_until
from waypost.errors import StorageError
from waypost.pipeline.inbox import INBOUND_JOB, Inbox, ReceivedMail, StoredMail, inbound_blob_key
from waypost.store import blobs as blob_module
from waypost.store.models import inbound_messages, jobs, utcnow

RAW = b"From: ann@example.org\r\nTo: journeys@waypost.test\r\nSubject: group\r\n\r\nhello\r\n"


def mail(n: int) -> ReceivedMail:
    return ReceivedMail(raw=RAW + b"%d\r\n" % n, mail_from="ann@example.org", rcpt_tos=("journeys@waypost.test",),
                        peer_ip="127.0.0.1", helo="client.example.org")


def committed_ids(runtime: Any) -> list[str]:
    with runtime.engine.connect() as conn:
        return sorted(conn.execute(sa.select(inbound_messages.c.id)).scalars())


def queued_for(runtime: Any) -> list[str]:
    with runtime.engine.connect() as conn:
        found = conn.execute(sa.select(jobs.c.kind, jobs.c.payload, jobs.c.state, jobs.c.attempts,
                                       jobs.c.max_attempts)).all()
    kinds = {(kind, state, attempts, most) for kind, _, state, attempts, most in found}
    assert kinds == {(INBOUND_JOB, "queued", 0, 3)}
    return sorted(payload["message_id"] for _, payload, *_ in found)


def blob_files(runtime: Any) -> list[Path]:
    return sorted(p for p in Path(runtime.blobs.root).rglob("*") if p.is_file())


def test_a_group_shares_one_commit_and_one_folder_sync_before_it(runtime: Any,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    inbox = Inbox(runtime.engine, runtime.blobs, max_attempts=3)
    first = inbox.accept(mail(0))  # the day's folder exists from here on
    syncs: list[tuple[Path, int]] = []
    real_sync = blob_module.fsync_directory

    def spy(directory: Path) -> None:
        syncs.append((Path(directory), len(committed_ids(runtime))))
        real_sync(directory)

    monkeypatch.setattr(blob_module, "fsync_directory", spy)
    release = threading.Event()
    waits = [release]  # the first batch waits for it: the others queue up behind
    prepare = inbox._group.prepare
    assert prepare is not None

    def held_prepare(batch: list[Any]) -> None:
        if waits:
            waits.pop().wait(30)
        prepare(batch)

    monkeypatch.setattr(inbox._group, "prepare", held_prepare)
    outcome: dict[str, str] = {}
    now = utcnow()
    ses_blob = inbound_blob_key("ses00000000000000000000000000001", now)
    runtime.blobs.put(ses_blob, RAW)  # an SES mail: its blob is durable before accept_stored
    syncs.clear()
    stored = StoredMail(id="ses00000000000000000000000000001", received_at=now, blob_key=ses_blob, size=len(RAW),
                        mail_from="ann@example.org", rcpt_tos=("journeys@waypost.test",), ingress="ses",
                        ses_message_id="ses-1")
    calls = [lambda: inbox.accept(mail(1))] + [lambda n=n: inbox.accept(mail(n)) for n in range(2, 6)] \
        + [lambda: inbox.accept_stored(stored)]
    threads = [threading.Thread(target=lambda i=i, call=call: outcome.__setitem__(str(i), call()))
               for i, call in enumerate(calls)]
    threads[0].start()
    wait_until(lambda: inbox._group._committing, message="the first commit under way")
    for thread in threads[1:]:
        thread.start()
    wait_until(lambda: len(inbox._group._waiting) == len(calls) - 1, message="the others waiting for it")
    release.set()
    for thread in threads:
        thread.join(30)
    assert len(outcome) == len(calls), "every accept returned"
    ids = sorted([first, *outcome.values()])
    assert committed_ids(runtime) == ids and queued_for(runtime) == ids
    day = Path(runtime.blobs.root) / Path(inbound_blob_key("x", now)).parent
    # one sync for the first batch (one row committed before it), one for the five behind it
    assert syncs == [(day, 1), (day, 2)], "the folder synced once per group, before its commit, never by a put"
    assert len(blob_files(runtime)) == len(ids)


def test_a_folder_that_cannot_be_synced_is_a_temporary_failure_that_leaves_nothing(
        runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    inbox = Inbox(runtime.engine, runtime.blobs, max_attempts=3)
    inbox.accept(mail(0))

    def failing(directory: Path) -> None:
        raise OSError(errno.EIO, "Input/output error (injected)")

    monkeypatch.setattr(blob_module, "fsync_directory", failing)
    with pytest.raises(StorageError, match="Input/output error"):
        inbox.accept(mail(1))
    assert len(committed_ids(runtime)) == 1 and len(queued_for(runtime)) == 1
    assert len(blob_files(runtime)) == 1, "the blob of the failed message is removed"


def test_a_blob_store_of_another_kind_is_used_as_it_is(runtime: Any) -> None:
    class Recording:
        def __init__(self, real: Any) -> None:
            self.real, self.puts = real, 0

        def put(self, key: str, data: bytes) -> None:
            self.puts += 1
            self.real.put(key, data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

    recording = Recording(runtime.blobs)
    inbox = Inbox(runtime.engine, recording, max_attempts=3)
    message_id = inbox.accept(mail(1))
    assert recording.puts == 1 and committed_ids(runtime) == [message_id] == queued_for(runtime)
