"""App domains: ``apps_domains`` / ``apps_domain`` settings, and aliases naming a domain.

The published SDK's ``url_alias_create(subdomain, workspace_id)`` always sends
``domain="apps.magpiecloud.com"``: it must get a URL of this server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from scheduler.fake_agent import FakeAgentClient
from scheduler.helpers import api_client, make_settings, running_control_plane, user_token

from mags import AsyncMags
from mags.config import Settings, load_settings
from mags.errors import ClientError, ConfigError


def test_apps_domains_settings() -> None:
    assert Settings().served_apps_domains == ["localhost"]
    s = Settings(apps_domain="Apps.Example.com.")
    assert (s.apps_domain, s.served_apps_domains) == ("apps.example.com", ["apps.example.com"])
    s = Settings(apps_domains="apps.example.com, Other.Example.org,,apps.example.com")
    assert s.served_apps_domains == ["apps.example.com", "other.example.org"]
    assert s.apps_domain == "apps.example.com"  # the first is the default
    s = Settings(apps_domain="other.example.org", apps_domains=["apps.example.com", "other.example.org"])
    assert s.served_apps_domains == ["other.example.org", "apps.example.com"]  # apps_domain picks the default
    assert Settings.model_validate_json(s.model_dump_json()).served_apps_domains == s.served_apps_domains
    with pytest.raises(ValueError, match="not one of apps_domains"):
        Settings(apps_domain="a.example.com", apps_domains="b.example.com")
    with pytest.raises(ValueError, match="not a domain name"):
        Settings(apps_domains="ok.example.com,bad/name")
    assert s.app_url("x", "apps.example.com") == "http://x.apps.example.com:8091"
    assert (
        s.app_url("x", "gone.example.net") == "http://x.other.example.org:8091"
    )  # no longer served: the default


def test_apps_domains_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAGS_APPS_DOMAINS", "a.example.com,b.example.com")
    assert load_settings().served_apps_domains == ["a.example.com", "b.example.com"]
    monkeypatch.setenv("MAGS_APPS_DOMAIN", "c.example.com")
    with pytest.raises(ConfigError, match="not one of apps_domains"):
        load_settings()


@pytest.fixture
async def alice(tmp_path: Path) -> Any:
    settings = make_settings(tmp_path, apps_domains="apps.example.com,apps.example.org")
    async with running_control_plane(settings, [FakeAgentClient()]) as cp:
        client = api_client(cp, await user_token(cp, "alice"))
        async with client:
            body = {"script": "sleep infinity", "workspace_id": "site", "persistent": True}
            r = await client.post("/mags-jobs", json=body)
            assert r.status_code == 200, r.text
            yield client


async def alias(client: httpx.AsyncClient, sub: str, **body: Any) -> httpx.Response:
    return await client.post("/mags-url-aliases", json={"subdomain": sub, "workspace_id": "site", **body})


async def test_hosted_default_domains_mean_this_servers_default(alice: httpx.AsyncClient) -> None:
    for i, domain in enumerate(("apps.magpiecloud.com", "app.lfg.run", "APPS.MAGPIECLOUD.COM.", None, "")):
        r = await alias(alice, f"site{i}", **({"domain": domain} if domain is not None else {}))
        assert r.status_code == 200, r.text
        assert r.json()["domain"] == "apps.example.com"
        assert r.json()["url"] == f"http://site{i}.apps.example.com:8091"


async def test_any_served_domain_may_be_named_and_others_are_refused(alice: httpx.AsyncClient) -> None:
    r = await alias(alice, "second", domain="apps.example.org")
    assert r.status_code == 200 and r.json()["url"] == "http://second.apps.example.org:8091", r.text
    listed = (await alice.get("/mags-url-aliases")).json()["aliases"]
    assert [a["url"] for a in listed] == ["http://second.apps.example.org:8091"]
    r = await alias(alice, "third", domain="evil.com")
    assert r.status_code == 400
    assert r.json() == {
        "error": "domain 'evil.com' is not served here: use one of apps.example.com, apps.example.org "
        "(or leave it out for apps.example.com)",
        "code": "domain_not_served",
    }


async def test_the_sdk_call_works_unchanged(alice: httpx.AsyncClient) -> None:
    # what magpie-mags 1.3 sends: url_alias_create(subdomain, workspace_id, domain="apps.magpiecloud.com")
    token = alice.headers["authorization"].split()[1]
    m = AsyncMags(api_token=token, api_url="http://mags.test", transport=alice._transport)
    made = await m.url_alias_create("my-app", "site", "apps.magpiecloud.com")
    assert made["subdomain"] == "my-app" and made["url"] == "http://my-app.apps.example.com:8091"
    with pytest.raises(ClientError) as err:
        await m.url_alias_create("my-app", "site", "example.net")
    assert (err.value.status_code, err.value.code) == (400, "domain_not_served")  # the machine code reaches scripts
