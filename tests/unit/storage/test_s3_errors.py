"""S3ObjectStore translates botocore errors into StorageError at the boundary (no server needed)."""

from __future__ import annotations

from typing import Any

import pytest

from mags.errors import StorageError
from mags.storage import s3
from mags.storage.objectstore import ObjectMissing


def client_error(code: str) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": code}}, "Op")


class StubClient:
    """Raises the configured error from every call."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise self.exc

        return fail


def make_store(exc: Exception) -> s3.S3ObjectStore:
    store = s3.S3ObjectStore("http://127.0.0.1:1", "bucket", "k", "s", create_bucket=False)
    s3._load_botocore()
    store._client_obj = StubClient(exc)
    return store


def test_client_is_built_lazily() -> None:
    store = s3.S3ObjectStore("http://127.0.0.1:1", "bucket", "k", "s")
    assert store._client_obj is None


def test_missing_key_is_object_missing() -> None:
    store = make_store(client_error("NoSuchKey"))
    with pytest.raises(ObjectMissing) as info:
        store.get("a/b")
    assert info.value.__cause__ is not None


def test_exists_false_on_404() -> None:
    assert make_store(client_error("404")).exists("x") is False


def test_other_errors_are_storage_errors() -> None:
    store = make_store(client_error("AccessDenied"))
    for call in (lambda: store.get("k"), lambda: store.put("k", b"x"), lambda: list(store.list("p/"))):
        with pytest.raises(StorageError) as info:
            call()
        assert not isinstance(info.value, ObjectMissing)


def test_connection_errors_are_storage_errors() -> None:
    from botocore.exceptions import EndpointConnectionError

    store = make_store(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    with pytest.raises(StorageError, match="failed"):
        store.get("k")


def test_conditional_put_conflict_is_false() -> None:
    assert make_store(client_error("PreconditionFailed")).put_if_absent("k", b"x") is False


def test_delete_of_missing_is_fine() -> None:
    make_store(client_error("NoSuchKey")).delete("k")


def test_bad_key_never_reaches_s3() -> None:
    with pytest.raises(StorageError, match="bad object key"):
        make_store(client_error("Boom")).put("../x", b"x")
