"""Typed server settings.

Settings come from (later wins): defaults, a TOML file (``--config`` or ``MAGS_CONFIG``),
environment variables ``MAGS_<FIELD>`` (upper case), and explicit keyword overrides (CLI
flags, tests).  Every field is documented in ``docs/CONFIGURATION.md``; a test checks that.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic import (
    ValidationError as PydanticValidationError,
)

from mags.errors import ConfigError

DEFAULT_APPS_DOMAIN = "localhost"


def default_data_dir() -> Path:
    """``/var/lib/mags`` for root, else the per-user data dir."""
    if os.geteuid() == 0:
        return Path("/var/lib/mags")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mags"


class Settings(BaseModel):
    """All knobs of a mags server / agent."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # --- where things live
    data_dir: Path = Field(default_factory=default_data_dir)
    image_dir: Path | None = None  # default: /var/lib/mags/images (shared by all data dirs)
    database_url: str | None = None  # default: sqlite under data_dir

    # --- listening
    host: str = "127.0.0.1"
    port: int = 8090
    public_url: str | None = None  # how clients reach the API; default http://host:port

    # --- runtime
    runtime: Literal["auto", "namespaces", "gvisor"] = "auto"
    event_loop: Literal["asyncio", "uvloop"] = "asyncio"
    pool_size: int = 2  # pre-started ephemeral sandboxes kept warm per agent
    default_memory_mb: int = 1024
    default_pids: int = 1024
    default_cpus: float = 1.0
    default_disk_gb: int = 2
    max_disk_gb: int = 100
    scratch_disk_gb: int = 20  # unused: each ephemeral sandbox has a scratch disk of its own disk_gb
    # --- host disk budget and layer cache (runtime/diskspace.py, agent/workspaces.py)
    disk_free_margin_gb: float = 5.0  # free space of the host filesystem sparse disks never promise
    layer_cache_gb: int = 20  # disk of restored --base layers (capped at half of what the budget has)
    # --- per-tenant quotas (core/quotas.py); 0 = no limit; per-user overrides: PATCH /quotas/{user}
    quota_disk_gb: int = 200  # workspaces' disk sizes + live ephemeral sandboxes' disks
    quota_workspaces: int = 100
    quota_sandboxes: int = 20  # live jobs with a VM (pending, starting, running, sleeping)
    max_job_seconds: int = 3600  # wall-clock limit for a script (ephemeral and local runs)
    network_cidr: str = "10.213.0.0/16"
    extra_ca_dir: Path = Path("/usr/local/share/ca-certificates")
    runsc_path: str = "runsc"
    # sandbox root is not host root (namespaces runtime): guest ids 0..65535 are host ids
    # userns_uid_base + slot*65536 .. (a user namespace per sandbox, idmapped layers)
    userns: bool = True
    userns_uid_base: int = 1_000_000_000

    # --- jobs
    max_script_bytes: int = 1024 * 1024
    # access / exec / sync / URL requests for a job whose sandbox is still being created wait
    # this long for it (`run` then at once `enable_access(id, 22)` is the docs' own example)
    start_wait_s: float = 30.0
    max_log_lines: int = 20000
    cron_grace_s: int = 300  # a cron tick noticed this late (server down) still runs, once

    # --- output limits: what one tenant's output may cost the shared server (memory, database)
    max_log_bytes: int = 10 * 1024 * 1024  # log bytes kept per job (besides max_log_lines)
    max_exec_output_bytes: int = 10 * 1024 * 1024  # per stream (stdout, stderr) of one exec answer
    max_exec_timeout_s: int = 3600  # a longer exec timeout is clamped to this

    @field_validator("max_log_bytes", "max_exec_output_bytes")
    @classmethod
    def _output_cap(cls, v: int) -> int:
        if v < 1024:
            raise ValueError("must be at least 1024")
        return v

    @field_validator("max_exec_timeout_s")
    @classmethod
    def _exec_timeout(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be at least 1")
        return v

    # --- storage (issue 4+)
    object_store: Literal["local", "s3"] = "local"
    object_store_dir: Path | None = None  # local store root; default <data_dir>/objects
    s3_endpoint: str | None = None
    s3_bucket: str = "mags"
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"
    local_workspace_retention_s: int = 600
    sync_interval_s: int = 30
    idle_timeout_s: int = 600
    file_retention_s: int = 86400

    # --- SSH gateway (issue 7)
    ssh_enabled: bool = True
    ssh_embedded: bool = True  # false: `python -m mags.ssh` runs the gateway elsewhere; keys are still issued
    ssh_port: int = 2222  # 0: any free port (embedded server only; tests)
    ssh_host: str | None = None  # what clients are told to connect to; default: the API's host

    @field_validator(
        "pool_size", "default_memory_mb", "default_pids", "default_disk_gb", "max_job_seconds", "cron_grace_s",
        "disk_free_margin_gb", "quota_disk_gb", "quota_workspaces", "quota_sandboxes", "start_wait_s",
    )
    @classmethod
    def _non_negative(cls, v: float) -> float:
        if v < 0:
            raise ValueError("must be >= 0")
        return v

    @field_validator("userns_uid_base")
    @classmethod
    def _userns_uid_base(cls, v: int) -> int:
        # 64 agent slots of 65536 ids each must fit below the largest valid id (2^32 - 2)
        if not 65536 <= v <= 2**32 - 2 - 64 * 65536:
            raise ValueError(f"must be between 65536 and {2**32 - 2 - 64 * 65536}")
        return v

    @field_validator("layer_cache_gb")
    @classmethod
    def _layer_cache_gb(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be at least 1")
        return v

    @field_validator("ssh_port")
    @classmethod
    def _ssh_port(cls, v: int) -> int:
        if not 0 <= v <= 65535:
            raise ValueError("must be between 0 and 65535")
        return v

    # --- public URLs: the edge proxy (issue 6, docs/PROXY.md)
    proxy_enabled: bool = True  # run the edge proxy inside `mags server`
    proxy_host: str | None = None  # address the proxy listens on; default: `host`
    proxy_port: int = 8091
    apps_domain: str = DEFAULT_APPS_DOMAIN  # URLs are <subdomain>.<apps_domain>; *.localhost needs no DNS
    # every domain the proxy serves apps under, the default first; set, it wins over apps_domain
    # (which then becomes its first entry, so code reading apps_domain sees the default)
    apps_domains: list[str] = Field(default_factory=list)
    apps_url_template: str | None = None  # public URL of an app; default {scheme}://{subdomain}.{domain}:{port}
    proxy_tls_cert: Path | None = None  # PEM certificate chain (a wildcard for *.<apps_domain>)
    proxy_tls_key: Path | None = None
    proxy_wake_timeout_s: float = 30.0  # a request to a sleeping sandbox waits this long for its port
    proxy_trusted_proxies: str = ""  # comma-separated CIDRs whose X-Forwarded-* headers are kept

    @field_validator("proxy_port")
    @classmethod
    def _proxy_port(cls, v: int) -> int:
        if not 0 <= v <= 65535:
            raise ValueError("must be between 0 and 65535")
        return v

    @field_validator("apps_url_template")
    @classmethod
    def _apps_url_template(cls, v: str | None) -> str | None:
        if not v:
            return None
        try:
            v.format(scheme="http", subdomain="x", domain="d", port=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"bad template ({exc}); use {{scheme}} {{subdomain}} {{domain}} {{port}}") from exc
        if "{subdomain}" not in v:
            raise ValueError("must contain {subdomain}")
        return v

    @field_validator("apps_domain")
    @classmethod
    def _apps_domain(cls, v: str) -> str:
        return _domain_name(v)

    @field_validator("apps_domains", mode="before")
    @classmethod
    def _apps_domains(cls, v: Any) -> list[str]:
        # a comma-separated string (MAGS_APPS_DOMAINS=a.example.com,b.example.com) or a list
        items = v.split(",") if isinstance(v, str) else v
        if items is None:
            return []
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            # ValueError, not TypeError: pydantic reports only the former as a bad setting
            raise ValueError("must be a list of domain names, or one comma-separated string")
        out: list[str] = []
        for item in items:
            if item.strip():
                name = _domain_name(item)
                if name not in out:
                    out.append(name)
        return out

    @model_validator(mode="before")
    @classmethod
    def _one_default_domain(cls, data: Any) -> Any:
        """``apps_domains`` set: ``apps_domain`` becomes the default among them (the first).

        Given both (``apps_domain`` other than its default), ``apps_domain`` must be one of
        ``apps_domains`` and is moved to the front;
        a dump of these settings (the proxy child reads one) therefore loads back the same.
        """
        if not isinstance(data, dict) or not data.get("apps_domains"):
            return data
        domains = cls._apps_domains(data["apps_domains"])
        if not domains:
            return data
        given = data.get("apps_domain")
        if given not in (None, "", DEFAULT_APPS_DOMAIN):
            default = _domain_name(str(given))
            if default not in domains:
                raise ValueError(
                    f"apps_domain {default} is not one of apps_domains ({', '.join(domains)}): "
                    "list it there, first, or leave apps_domain out"
                )
            domains = [default, *(d for d in domains if d != default)]
        return {**data, "apps_domains": domains, "apps_domain": domains[0]}

    # ------------------------------------------------------------------ derived
    @property
    def images_path(self) -> Path:
        if self.image_dir is not None:
            return self.image_dir
        return Path("/var/lib/mags/images") if os.geteuid() == 0 else self.data_dir / "images"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'mags.db'}"

    @property
    def api_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def ssh_public_host(self) -> str:
        """The host name ``POST .../access {"port": 22}`` tells clients to connect to."""
        if self.ssh_host:
            return self.ssh_host
        if self.public_url:
            from urllib.parse import urlsplit

            host = urlsplit(self.public_url).hostname
            if host:
                return host
        return "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host

    @property
    def local_store_root(self) -> Path:
        return self.object_store_dir or self.data_dir / "objects"

    @property
    def run_dir(self) -> Path:
        """Per-agent volatile state (sandbox dirs, sockets)."""
        return self.data_dir / "run"

    @property
    def agent_socket(self) -> Path:
        return self.run_dir / "agent.sock"

    @property
    def proxy_listen_host(self) -> str:
        """Where the edge proxy listens (``proxy_host``, else the API's ``host``)."""
        return self.proxy_host or self.host

    @property
    def proxy_tls(self) -> bool:
        return self.proxy_tls_cert is not None

    @property
    def served_apps_domains(self) -> list[str]:
        """Every domain apps are served under, the default (``apps_domain``) first."""
        return self.apps_domains or [self.apps_domain]

    def app_url(self, subdomain: str, domain: str | None = None) -> str:
        """The public URL of ``<subdomain>.<domain>`` (``apps_url_template`` decides).

        ``domain``: one of the served domains (an alias's); default, or not served: ``apps_domain``.
        """
        scheme = "https" if self.proxy_tls else "http"
        template = self.apps_url_template
        if not template:
            default_port = 443 if self.proxy_tls else 80
            template = "{scheme}://{subdomain}.{domain}" + ("" if self.proxy_port == default_port else ":{port}")
        if domain is None or domain not in self.served_apps_domains:
            domain = self.apps_domain
        return template.format(scheme=scheme, subdomain=subdomain, domain=domain, port=self.proxy_port)


def _domain_name(value: str) -> str:
    name = value.strip().strip(".").lower()
    if not name or any(c in name for c in "/: ,"):
        raise ValueError(f"{value!r} is not a domain name such as apps.example.com")
    return name


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings from file, environment and overrides; raise ConfigError on bad values."""
    values: dict[str, Any] = {}
    path = config_file or os.environ.get("MAGS_CONFIG")
    if path:
        try:
            values.update(tomllib.loads(Path(path).read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    for name in Settings.model_fields:
        env = os.environ.get(f"MAGS_{name.upper()}")
        if env is not None and env != "":
            values[name] = env
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**values)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"bad setting {loc}: {first['msg']}") from exc
