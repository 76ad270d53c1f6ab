"""Error mapping, connection failures, uploads and the other resources."""

from __future__ import annotations

import httpx
import pytest

from mags import Mags
from mags.errors import ClientError, ValidationError


def test_error_answers_raise_client_error_with_server_message(api, mags_client):
    api.on("GET", "/mags-workspaces", (409, {"error": "workspace in use"}))
    with pytest.raises(ClientError) as info:
        mags_client.list_workspaces()
    assert str(info.value) == "workspace in use"
    assert info.value.status_code == 409


def test_framework_style_and_plain_errors(api, mags_client):
    api.on(
        "GET", "/mags-workspaces", (422, {"detail": [{"loc": ["body", "script"], "msg": "field required"}]})
    )
    with pytest.raises(ClientError, match="script: field required"):
        mags_client.list_workspaces()
    api.routes.clear()
    api.on("GET", "/mags-workspaces", httpx.Response(502, text="<html>bad gateway</html>"))
    with pytest.raises(ClientError, match="HTTP 502"):
        mags_client.list_workspaces()


def test_401_without_token_says_how_to_log_in(api):
    api.on("GET", "/mags-cron", (401, {"error": "missing token"}))
    m = Mags(api_url="http://h", transport=httpx.MockTransport(api))
    with pytest.raises(ClientError, match="not logged in: run `mags login`") as info:
        m.cron_list()
    assert info.value.status_code == 401
    assert "authorization" not in api.requests[0].headers


def test_connection_refused_message():
    def refuse(request):
        raise httpx.ConnectError("Connection refused", request=request)

    m = Mags(api_token="t", api_url="http://127.0.0.1:9", transport=httpx.MockTransport(refuse))
    with pytest.raises(ClientError) as info:
        m.list_jobs()
    assert str(info.value) == "cannot reach mags server at http://127.0.0.1:9 — is `mags server` running?"
    assert info.value.status_code == 0


def test_real_refused_connection_is_reported_the_same_way():
    m = Mags(api_token="t", api_url="http://127.0.0.1:1", timeout=2)
    with m, pytest.raises(ClientError, match="cannot reach mags server at http://127.0.0.1:1"):
        m.status("5b0e7a52-2a4e-4a53-9a43-6f1f3f1f0b11")


def test_read_timeout_is_a_client_error():
    def slow(request):
        raise httpx.ReadTimeout("timed out", request=request)

    m = Mags(api_token="t", api_url="http://h", transport=httpx.MockTransport(slow))
    with m, pytest.raises(ClientError, match="did not answer within 30s"):
        m.list_jobs()


class StreamInspector(httpx.BaseTransport):
    """Looks at the request body *before* it is read (MockTransport reads it first)."""

    def __init__(self) -> None:
        self.seen: dict = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen["stream"] = request.stream
        self.seen["length"] = request.headers["content-length"]
        self.seen["body"] = request.read()
        return httpx.Response(200, json={"file_id": "f-1"})


def test_upload_streams_the_file_as_multipart(tmp_path):
    data = b"x" * (300 * 1024)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    inspector = StreamInspector()
    with Mags(api_token="t", api_url="http://h", transport=inspector) as m:
        assert m.upload_file(path) == "f-1"
        assert m.upload_files([path, path]) == ["f-1", "f-1"]
    # The body is a stream over the open file (read in chunks while sending), not bytes.
    file_field = inspector.seen["stream"].fields[0]
    assert hasattr(file_field.file, "read")
    assert int(inspector.seen["length"]) > len(data)
    assert b'name="file"; filename="data.bin"' in inspector.seen["body"]
    assert data in inspector.seen["body"]


def test_upload_missing_file(mags_client, tmp_path):
    with pytest.raises(ValidationError, match="no such file"):
        mags_client.upload_file(tmp_path / "nope")


def test_workspaces_aliases_cron_tokens(api, mags_client):
    api.on("GET", "/mags-workspaces", {"workspaces": [{"workspace_id": "w"}], "total": 1})
    api.on("DELETE", "/mags-workspaces/w", httpx.Response(204))
    api.on("POST", "/mags-url-aliases", {"id": "a", "subdomain": "app", "url": "http://app.x"})
    api.on("GET", "/mags-url-aliases", {"aliases": [], "total": 0})
    api.on("DELETE", "/mags-url-aliases/app", {"success": True})
    api.on("POST", "/mags-cron", {"id": "c1", "name": "b", "enabled": True})
    api.on("GET", "/mags-cron", {"cron_jobs": []})
    api.on("GET", "/mags-cron/c1", {"id": "c1"})
    api.on("PATCH", "/mags-cron/c1", {"id": "c1", "enabled": False})
    api.on("DELETE", "/mags-cron/c1", {"success": True})
    api.on("GET", "/whoami", {"user": "u", "admin": False, "token_name": "t"})
    api.on("POST", "/tokens", {"id": "t1", "token": "secret"})
    api.on("GET", "/tokens", {"tokens": []})
    api.on("DELETE", "/tokens/t1", {"success": True})

    assert mags_client.list_workspaces()["total"] == 1
    assert mags_client.delete_workspace("w") == {}
    assert mags_client.url_alias_create("app", "w")["url"] == "http://app.x"
    assert api.body(api.calls("POST", "/mags-url-aliases")[0]) == {"subdomain": "app", "workspace_id": "w"}
    mags_client.url_alias_create("app", "w", "example.com")
    assert api.body(api.calls("POST", "/mags-url-aliases")[1])["domain"] == "example.com"
    assert mags_client.url_alias_list() == {"aliases": [], "total": 0}
    mags_client.url_alias_delete("app")
    mags_client.cron_create(name="b", cron_expression="0 0 * * *", script="tar c /data", workspace_id="w")
    assert api.body(api.calls("POST", "/mags-cron")[0]) == {
        "name": "b",
        "cron_expression": "0 0 * * *",
        "script": "tar c /data",
        "workspace_id": "w",
        "persistent": False,
    }
    assert mags_client.cron_list() == {"cron_jobs": []}
    assert mags_client.cron_get("c1") == {"id": "c1"}
    assert mags_client.cron_update("c1", enabled=False)["enabled"] is False
    assert api.body(api.calls("PATCH")[0]) == {"enabled": False}
    mags_client.cron_delete("c1")
    assert mags_client.whoami()["user"] == "u"
    assert mags_client.token_create(name="ci", user="bob", admin=True)["token"] == "secret"
    assert api.body(api.calls("POST", "/tokens")[0]) == {"name": "ci", "user": "bob", "admin": True}
    assert mags_client.token_list() == {"tokens": []}
    mags_client.token_revoke("t1")


def test_bad_input_is_refused_locally(api, mags_client):
    with pytest.raises(ValidationError, match="5 fields"):
        mags_client.cron_create(name="b", cron_expression="daily", script="x")
    with pytest.raises(ValidationError):
        mags_client.delete_workspace("../etc")
    with pytest.raises(ValidationError, match="port"):
        mags_client.url("web", port=70000)
    assert api.requests == []
