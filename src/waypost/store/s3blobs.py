"""The BlobStore port on Amazon S3: encrypted at rest, names that reveal nothing, streamed.

Every object is written with server-side encryption (SSE-S3, or SSE-KMS with a given key). Its
name is ``<prefix><folder>/<sealed key>``: the folder is the key's first segment (``inbound``,
``photos``), kept readable so the bucket's lifecycle rules can expire each kind on its own; the
rest is the whole key sealed with AES-SIV (deterministic, so the same key always names the same
object, and reversible, so ``iter_keys`` can give keys back), which hides dates, message ids and
photo hashes from anyone who can list the bucket. S3 acknowledges a PUT only once the object is
stored durably, which is what ``put`` promises.

boto3 is imported here and by nothing else of the store; the wiring passes plain values.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from waypost.errors import StorageError
from waypost.store.blobs import check_key

_NAME_CONTEXT = b"waypost blob names\0"
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})


class S3BlobStore:
    """``client`` is a boto3 S3 client; ``name_key`` the secret that seals object names (the
    same in every process sharing the bucket, never changed while objects exist)."""

    def __init__(self, client: Any, bucket: str, *, name_key: bytes, prefix: str = "",
                 kms_key_id: str | None = None) -> None:
        if len(name_key) < 32:
            raise ValueError("the S3 name key needs at least 32 bytes")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self._siv = AESSIV(hashlib.sha512(_NAME_CONTEXT + name_key).digest())
        self._encryption = ({"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id} if kms_key_id
                            else {"ServerSideEncryption": "AES256"})

    @classmethod
    def connect(cls, bucket: str, *, region: str, name_key: bytes, prefix: str = "", kms_key_id: str | None = None,
                endpoint_url: str | None = None) -> S3BlobStore:
        """A store with its own boto3 client (standard retries by the SDK)."""
        import boto3
        from botocore.config import Config

        client = boto3.session.Session().client("s3", region_name=region, endpoint_url=endpoint_url,
                                                config=Config(retries={"total_max_attempts": 4, "mode": "standard"}))
        return cls(client, bucket, name_key=name_key, prefix=prefix, kms_key_id=kms_key_id)

    # --- names ------------------------------------------------------------------------------

    def object_name(self, key: str) -> str:
        """The S3 object name of ``key`` (raises ValueError for a key the port refuses)."""
        folder = check_key(key).split("/", 1)[0]
        sealed = base64.b32encode(self._siv.encrypt(key.encode(), None)).decode().rstrip("=").lower()
        return f"{self.prefix}{folder}/{sealed}"

    def _key_of(self, name: str) -> str | None:
        """The key an object name seals; None for an object this store did not write."""
        sealed = name.rsplit("/", 1)[-1].upper()
        try:
            return self._siv.decrypt(base64.b32decode(sealed + "=" * (-len(sealed) % 8)), None).decode()
        except (binascii.Error, InvalidTag, UnicodeDecodeError, ValueError):
            return None

    # --- the port ---------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        name = self.object_name(key)
        try:
            self.client.put_object(Bucket=self.bucket, Key=name, Body=data, **self._encryption)
        except Exception as err:  # botocore's ClientError, BotoCoreError and transport errors
            raise StorageError(f"cannot store blob {key} in S3: {err.__class__.__name__}: {err}") from err

    def put_stream(self, key: str, stream: BinaryIO) -> int:
        """A multipart upload for a large stream (parts of 8 MB in memory at a time)."""
        name = self.object_name(key)
        counted = _Counting(stream)
        try:
            self.client.upload_fileobj(counted, self.bucket, name, ExtraArgs=dict(self._encryption))
        except Exception as err:
            raise StorageError(f"cannot store blob {key} in S3: {err.__class__.__name__}: {err}") from err
        return counted.size

    def get(self, key: str) -> bytes:
        with self.open(key) as body:
            return body.read()

    def open(self, key: str) -> BinaryIO:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.object_name(key))
        except Exception as err:
            if _missing(err):
                raise KeyError(key) from None
            raise StorageError(f"cannot read blob {key} from S3: {err.__class__.__name__}: {err}") from err
        return cast(BinaryIO, response["Body"])  # botocore's StreamingBody: read(n), close, with

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.object_name(key))

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.object_name(key))
        except Exception as err:
            if _missing(err):
                return False
            raise StorageError(f"cannot look up blob {key} in S3: {err.__class__.__name__}: {err}") from err
        return True

    def iter_keys(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        """Keys under the folder ``prefix``, a page of S3's listing (1,000 objects) at a time;
        objects whose names this store cannot unseal are not its own and are left out."""
        wanted = prefix.strip("/")
        folder = wanted.split("/", 1)[0]
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                      Prefix=f"{self.prefix}{folder}/")
        for page in pages:
            for item in page.get("Contents", []):
                key = self._key_of(item["Key"])
                if key is not None and (key == wanted or key.startswith(wanted + "/")):
                    yield key, item["LastModified"].astimezone(UTC)

    def presigned_url(self, key: str, seconds: int) -> str:
        """A URL that reads ``key`` without credentials for ``seconds`` (photos on a journey page)."""
        return str(self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.object_name(key)}, ExpiresIn=seconds))


def _missing(err: Exception) -> bool:
    response = getattr(err, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return code in _MISSING


class _Counting:
    """A read-only file that counts what was read through it (the size ``put_stream`` returns)."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.stream.read(size)
        self.size += len(chunk)
        return chunk
