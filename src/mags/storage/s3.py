"""S3ObjectStore: the object store on any S3-compatible server (AWS, SeaweedFS, ...) via boto3.

Path-style addressing (what self-hosted servers expect), standard retries, and checksums only
where S3 requires them (we verify every chunk with blake3 ourselves, and several S3-compatible
servers reject the newer default CRC trailers).  Every botocore error becomes a StorageError
(``ObjectMissing`` for a missing key) here, at the boundary.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


class _NotLoaded(Exception):
    """Stands in for botocore's exception classes until boto3 is imported (see ``_load``)."""


# Bound to botocore's classes when the first client is made; no botocore error can be raised
# before that, and a placeholder keeps the ``except`` clauses valid meanwhile.
ClientError: type[Exception] = _NotLoaded
BotoCoreError: type[Exception] = _NotLoaded


def _load_botocore() -> None:
    global ClientError, BotoCoreError
    from botocore.exceptions import BotoCoreError as _BotoCoreError
    from botocore.exceptions import ClientError as _ClientError

    ClientError, BotoCoreError = _ClientError, _BotoCoreError


from mags.errors import StorageError
from mags.storage.objectstore import ObjectInfo, ObjectMissing, validate_key

_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
_NO_BUCKET_CODES = {"404", "NoSuchBucket", "NotFound"}
_EXISTS_CODES = {"412", "PreconditionFailed", "ConditionalRequestConflict"}
_MB = 1 << 20


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


class S3ObjectStore:
    """An object store in one S3 bucket (created if missing), under an optional key prefix.

    The boto3 client is built on first use and the bucket checked (and created) before the
    first write, so a sync that finds nothing to do never pays for importing boto3 (~0.3 s).
    """

    remote = True

    def __init__(
        self,
        endpoint: str | None,
        bucket: str,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = "us-east-1",
        *,
        prefix: str = "",
        max_pool_connections: int = 32,
        create_bucket: bool = True,
    ) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._access_key = access_key
        self._secret_key = secret_key
        self._region = region
        self._max_pool_connections = max_pool_connections
        self._create_bucket = create_bucket
        self._lock = threading.RLock()
        self._client_obj: Any = None
        self._transfer: Any = None
        self._bucket_ready = False

    @property
    def _client(self) -> Any:
        if self._client_obj is None:
            with self._lock:
                if self._client_obj is None:
                    self._client_obj = self._make_client()
        return self._client_obj

    def _make_client(self) -> Any:
        import boto3  # slow to import: only when the store is first used
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        _load_botocore()
        config = Config(
            region_name=self._region,
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 5, "mode": "standard"},
            max_pool_connections=self._max_pool_connections,
            connect_timeout=10,
            read_timeout=120,
            tcp_keepalive=True,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._transfer = TransferConfig(
            multipart_threshold=64 * _MB, multipart_chunksize=16 * _MB, max_concurrency=8, use_threads=True
        )
        try:
            return boto3.session.Session().client(
                "s3",
                endpoint_url=self.endpoint,
                aws_access_key_id=self._access_key,
                aws_secret_access_key=self._secret_key,
                config=config,
            )
        except (BotoCoreError, ValueError) as exc:
            raise StorageError(f"cannot set up S3 client for {self.endpoint}: {exc}") from exc

    def _writable(self) -> Any:
        """The client, once the bucket is known to exist (created if allowed)."""
        client = self._client
        if not self._bucket_ready:
            with self._lock:
                if not self._bucket_ready:
                    if self._create_bucket:
                        self._ensure_bucket(self._region)
                    self._bucket_ready = True
        return client

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.endpoint!r}, {self.bucket!r})"

    def _ensure_bucket(self, region: str) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if _code(exc) not in _NO_BUCKET_CODES:
                raise StorageError(f"cannot reach bucket {self.bucket} at {self.endpoint}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot reach S3 at {self.endpoint}: {exc}") from exc
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._client.create_bucket(**kwargs)
        except ClientError as exc:
            if _code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise StorageError(f"cannot create bucket {self.bucket}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot create bucket {self.bucket}: {exc}") from exc

    def _key(self, key: str) -> str:
        return self._prefix + validate_key(key)

    def _error(self, verb: str, key: str, exc: Exception) -> StorageError:
        if isinstance(exc, ClientError) and _code(exc) in _MISSING_CODES:
            return ObjectMissing(f"no object {key}")
        return StorageError(f"S3 {verb} {key} failed: {exc}")

    # ------------------------------------------------------------------ writes
    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` (one PUT; S3 PUTs are atomic)."""
        try:
            self._writable().put_object(Bucket=self.bucket, Key=self._key(key), Body=bytes(data))
        except (ClientError, BotoCoreError) as exc:
            raise self._error("put", key, exc) from exc

    def put_file(self, key: str, path: str | Path) -> None:
        """Upload a local file (multipart above 64 MiB)."""
        try:
            self._writable().upload_file(str(path), self.bucket, self._key(key), Config=self._transfer)
        except (ClientError, BotoCoreError) as exc:
            raise self._error("upload", key, exc) from exc
        except OSError as exc:
            raise StorageError(f"cannot upload {path} to {key}: {exc}") from exc

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Conditional PUT (``If-None-Match: *``); False if the key already exists."""
        try:
            self._writable().put_object(
                Bucket=self.bucket, Key=self._key(key), Body=bytes(data), IfNoneMatch="*"
            )
            return True
        except ClientError as exc:
            if _code(exc) in _EXISTS_CODES:
                return False
            raise self._error("conditional put", key, exc) from exc
        except BotoCoreError as exc:
            raise self._error("conditional put", key, exc) from exc

    # ------------------------------------------------------------------ reads
    def get(self, key: str) -> bytes:
        """Return the whole object."""
        try:
            resp = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            with resp["Body"] as body:
                data: bytes = body.read()
            return data
        except (ClientError, BotoCoreError) as exc:
            raise self._error("get", key, exc) from exc

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Ranged GET; a negative ``offset`` asks for the object's last ``-offset`` bytes."""
        rng = f"bytes=-{-offset}" if offset < 0 else f"bytes={offset}-{offset + length - 1}"
        if length <= 0:
            return b""
        try:
            resp = self._client.get_object(Bucket=self.bucket, Key=self._key(key), Range=rng)
            with resp["Body"] as body:
                data: bytes = body.read()
            return data[:length]
        except ClientError as exc:
            if _code(exc) == "InvalidRange":
                return b""
            raise self._error("get", key, exc) from exc
        except BotoCoreError as exc:
            raise self._error("get", key, exc) from exc

    def get_to_file(self, key: str, path: str | Path) -> None:
        """Download an object to a local file (parallel ranged GETs for big objects)."""
        dest = Path(path)
        tmp = dest.with_name(f".{dest.name}.{os.urandom(4).hex()}.part")
        try:
            self._client.download_file(self.bucket, self._key(key), str(tmp), Config=self._transfer)
            os.replace(tmp, dest)
        except (ClientError, BotoCoreError) as exc:
            tmp.unlink(missing_ok=True)
            raise self._error("download", key, exc) from exc
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot download {key} to {dest}: {exc}") from exc

    def exists(self, key: str) -> bool:
        """HEAD the object."""
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if _code(exc) in _MISSING_CODES:
                return False
            raise self._error("head", key, exc) from exc
        except BotoCoreError as exc:
            raise self._error("head", key, exc) from exc

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield objects under ``prefix`` (paginated ListObjectsV2)."""
        strip = len(self._prefix)
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._prefix + prefix
            )
            for page in pages:
                for obj in page.get("Contents", ()):
                    yield ObjectInfo(obj["Key"][strip:], int(obj["Size"]), obj["LastModified"].timestamp())
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"S3 list {prefix!r} failed: {exc}") from exc

    # ------------------------------------------------------------------ deletes
    def delete(self, key: str) -> None:
        """Delete one object (S3 deletes are idempotent)."""
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and _code(exc) in _MISSING_CODES:
                return
            raise self._error("delete", key, exc) from exc

    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete objects in batches of 1,000 (DeleteObjects); raise if any failed."""
        batch: list[dict[str, str]] = []
        for key in keys:
            batch.append({"Key": self._key(key)})
            if len(batch) == 1000:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    def _delete_batch(self, batch: list[dict[str, str]]) -> None:
        try:
            resp = self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"S3 delete of {len(batch)} objects failed: {exc}") from exc
        errors = [e for e in resp.get("Errors", ()) if e.get("Code") not in _MISSING_CODES]
        if errors:
            first = errors[0]
            raise StorageError(
                f"S3 delete failed for {len(errors)} objects, e.g. {first.get('Key')}: {first.get('Message')}"
            )
