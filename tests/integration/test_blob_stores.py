"""The BlobStore port, the same contract for both adapters: the data directory and S3 (moto in
server mode, boto3 as in production)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from tests.support.moto_server import REGION
from waypost.errors import StorageError
from waypost.store.blobs import BlobStore, LocalBlobStore
from waypost.store.s3blobs import S3BlobStore

NAME_KEY = b"k" * 32


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
        return
    request.getfixturevalue("aws")
    boto3.client("s3", region_name=REGION).create_bucket(
        Bucket="blobs", CreateBucketConfiguration={"LocationConstraint": REGION})
    yield S3BlobStore.connect("blobs", region=REGION, name_key=NAME_KEY, prefix="waypost/")


class Chunks(io.RawIOBase):
    """A stream of ``size`` bytes that remembers the largest read asked of it."""

    def __init__(self, size: int) -> None:
        self.left, self.largest = size, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            raise AssertionError("the whole stream was asked for at once")
        self.largest = max(self.largest, size)
        chunk = b"x" * min(size, self.left)
        self.left -= len(chunk)
        return chunk


def test_put_get_open_exists_delete(store: BlobStore) -> None:
    store.put("inbound/2026/01/02/a.eml", b"raw mail")

    assert store.get("inbound/2026/01/02/a.eml") == b"raw mail"
    with store.open("inbound/2026/01/02/a.eml") as stream:
        assert stream.read(3) == b"raw" and stream.read() == b" mail"
    assert store.exists("inbound/2026/01/02/a.eml")
    store.delete("inbound/2026/01/02/a.eml")
    store.delete("inbound/2026/01/02/a.eml")  # deleting what is gone is no error
    assert not store.exists("inbound/2026/01/02/a.eml")
    with pytest.raises(KeyError):
        store.get("inbound/2026/01/02/a.eml")
    with pytest.raises(KeyError):
        store.open("inbound/2026/01/02/a.eml")


def test_a_large_stream_is_stored_in_pieces(store: BlobStore) -> None:
    size = 12 * 1024 * 1024 + 5  # more than one S3 multipart part
    source = Chunks(size)

    assert store.put_stream("inbound/big.eml", source) == size  # type: ignore[arg-type]

    assert source.largest <= 8 * 1024 * 1024
    with store.open("inbound/big.eml") as stream:
        total = sum(len(chunk) for chunk in iter(lambda: stream.read(1 << 20), b""))
    assert total == size


def test_iter_keys_lists_a_folder_with_write_times(store: BlobStore) -> None:
    before = datetime.now(UTC) - timedelta(minutes=1)
    for key in ("inbound/2026/a.eml", "inbound/2026/b.eml", "photos/abc/thumb.jpg", "inboundx/c"):
        store.put(key, b"1")

    found = dict(store.iter_keys("inbound"))

    assert sorted(found) == ["inbound/2026/a.eml", "inbound/2026/b.eml"]
    assert all(when > before for when in found.values())
    assert [key for key, _ in store.iter_keys("photos/abc")] == ["photos/abc/thumb.jpg"]


def test_bad_keys_are_refused(store: BlobStore) -> None:
    for key in ("../etc/passwd", "inbound/../x", "/abs", ""):
        with pytest.raises(ValueError):
            store.put(key, b"x")


@pytest.mark.usefixtures("aws")
def test_s3_objects_are_encrypted_with_the_kms_key_when_one_is_set() -> None:
    boto3.client("s3", region_name=REGION).create_bucket(
        Bucket="kms-blobs", CreateBucketConfiguration={"LocationConstraint": REGION})
    key_id = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["KeyId"]
    store = S3BlobStore.connect("kms-blobs", region=REGION, name_key=NAME_KEY, kms_key_id=key_id)

    store.put("photos/abc/display.jpg", b"jpeg")
    store.put_stream("inbound/x.eml", io.BytesIO(b"mail"))

    s3 = boto3.client("s3", region_name=REGION)
    for item in s3.list_objects_v2(Bucket="kms-blobs")["Contents"]:
        head = s3.head_object(Bucket="kms-blobs", Key=item["Key"])
        assert head["ServerSideEncryption"] == "aws:kms" and key_id in head["SSEKMSKeyId"]
        assert "abc" not in item["Key"] and "x.eml" not in item["Key"]


@pytest.mark.usefixtures("aws")
def test_s3_failures_raise_storage_error_and_foreign_objects_are_not_keys() -> None:
    store = S3BlobStore.connect("no-such-bucket", region=REGION, name_key=NAME_KEY)
    with pytest.raises(StorageError):
        store.put("inbound/a.eml", b"x")
    with pytest.raises(StorageError):
        store.put_stream("inbound/a.eml", io.BytesIO(b"x"))

    boto3.client("s3", region_name=REGION).create_bucket(
        Bucket="shared", CreateBucketConfiguration={"LocationConstraint": REGION})
    boto3.client("s3", region_name=REGION).put_object(Bucket="shared", Key="inbound/not-ours", Body=b"x")
    mine = S3BlobStore.connect("shared", region=REGION, name_key=NAME_KEY)
    mine.put("inbound/a.eml", b"x")
    other = S3BlobStore.connect("shared", region=REGION, name_key=b"o" * 32)
    assert [key for key, _ in mine.iter_keys("inbound")] == ["inbound/a.eml"]
    assert list(other.iter_keys("inbound")) == []  # another name key unseals nothing
