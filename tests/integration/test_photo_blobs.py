"""A photo's thumbnail and display JPEGs are written while the image pool works on the other
photos (issue 19), and are durable before the journey that refers to them is committed."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import wait_until
from tests.integration.test_pipeline import SHOTS, caught, count, deliver, drain, photo_mail
from waypost.apps.journeys.imagepool import ImagePool
from waypost.apps.journeys.samples import make_photo
from waypost.config import Settings
from waypost.errors import StorageError
from waypost.mail.bodies import StoredBody
from waypost.store.blobs import LocalBlobStore
from waypost.store.models import journeys, outbound_messages, photos


@pytest.fixture
def pooled(make_settings: Callable[..., Settings], allowing_runtime: Callable[[Settings], Any]) -> Any:
    return allowing_runtime(make_settings(journeys={"image_workers": 2}, trusted_networks=["127.0.0.0/8"]))


def _stored_photos(runtime: Any) -> list[sa.Row]:
    with runtime.engine.connect() as conn:
        return conn.execute(sa.select(photos.c.thumb_key, photos.c.display_key)).all()


def test_each_photo_is_stored_once_and_before_its_row(pooled: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    real_put, puts = LocalBlobStore.put, []

    def counted(store: LocalBlobStore, key: str, data: bytes) -> None:
        puts.append(key)
        real_put(store, key, data)

    monkeypatch.setattr(LocalBlobStore, "put", counted)
    message = photo_mail()
    message.add_attachment(make_photo(SHOTS[0], seed=2), maintype="image", subtype="jpeg",
                           filename="again.jpg")  # the reversed mail's third photo, sent twice
    deliver(pooled, message)
    drain(pooled)
    rows = _stored_photos(pooled)
    assert len(rows) == len(SHOTS) and len(caught(pooled)) == 1
    photo_puts = [key for key in puts if key.startswith("photos/")]
    assert sorted(photo_puts) == sorted(key for row in rows for key in (row.thumb_key, row.display_key))
    for row in rows:
        for key in (row.thumb_key, row.display_key):
            assert pooled.blobs.get(key).startswith(b"\xff\xd8")  # a JPEG, whole


def test_a_photo_that_cannot_be_stored_fails_the_attempt_and_the_retry_answers_once(
        pooled: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    real_put = LocalBlobStore.put

    def full_disk(store: LocalBlobStore, key: str, data: bytes) -> None:
        if key.endswith("display.jpg"):
            raise StorageError(f"cannot store blob {key}: No space left on device")
        real_put(store, key, data)

    monkeypatch.setattr(LocalBlobStore, "put", full_disk)
    deliver(pooled, photo_mail())
    drain(pooled)
    assert count(pooled, journeys) == count(pooled, photos) == count(pooled, outbound_messages) == 0
    monkeypatch.setattr(LocalBlobStore, "put", real_put)
    wait_until(lambda: (drain(pooled), len(caught(pooled)) == 1)[1], message="the retry's reply")
    assert len(_stored_photos(pooled)) == len(SHOTS) and count(pooled, outbound_messages) == 1


def test_the_image_workers_read_the_photos_from_the_stored_mail_themselves(
        pooled: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    real_process, handed = ImagePool.process, []

    def recorded(pool: ImagePool, photos: Any, **kwargs: Any) -> Any:
        handed.extend(photos[index] for index in range(len(photos)))
        return real_process(pool, photos, **kwargs)

    monkeypatch.setattr(ImagePool, "process", recorded)
    deliver(pooled, photo_mail())
    drain(pooled)
    # each photo crossed to its worker as its place in the stored mail, never as its bytes
    assert len(handed) == len(SHOTS) and all(isinstance(photo, StoredBody) for photo in handed)
    assert len(_stored_photos(pooled)) == len(SHOTS) and len(caught(pooled)) == 1


def test_a_stored_mail_replaced_under_the_workers_fails_the_attempt_and_the_retry_answers_once(
        pooled: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    real_process, attempts = ImagePool.process, []

    def replaced_first(pool: ImagePool, photos: Any, **kwargs: Any) -> Any:
        attempts.append(len(photos))
        if len(attempts) == 1:  # another file now stands where the parsed mail was (same bytes)
            place = photos[0]
            copy = Path(place.path).with_suffix(".copy")
            copy.write_bytes(Path(place.path).read_bytes())
            os.replace(copy, place.path)
        return real_process(pool, photos, **kwargs)

    monkeypatch.setattr(ImagePool, "process", replaced_first)
    deliver(pooled, photo_mail())
    drain(pooled)  # the first attempt fails: no worker reads a file other than the one parsed
    assert count(pooled, journeys) == count(pooled, photos) == 0 and len(attempts) == 1
    wait_until(lambda: (drain(pooled), len(caught(pooled)) == 1)[1], message="the retry's reply")
    assert len(attempts) == 2 and len(_stored_photos(pooled)) == len(SHOTS)
