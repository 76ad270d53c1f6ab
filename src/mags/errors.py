"""The one exception tree of mags.

::

    MagsError                      base of everything we raise on purpose
    ├── ConfigError                bad or missing settings
    ├── ValidationError            bad input from a user (HTTP 400)
    │   └── PayloadTooLarge        input over a size limit (HTTP 413)
    ├── AuthError                  missing / bad token (HTTP 401)
    ├── PermissionDenied           token valid, action not allowed (HTTP 403)
    ├── NotFound                   no such object *for this caller* (HTTP 404)
    ├── Conflict                   state conflict (HTTP 409)
    ├── QuotaExceeded              past one of the user's quotas (HTTP 429, code quota_exceeded)
    ├── RuntimeUnavailable         an isolation backend cannot run on this host
    ├── SandboxError               a sandbox failed to start / misbehaved
    │   ├── SandboxGone            the sandbox no longer exists
    │   ├── NotEnoughDiskSpace     a disk does not fit in the host's disk budget (HTTP 507)
    │   └── ExecTimeout            a command ran past its timeout
    ├── ImageError                 guest image missing / failed to build
    ├── StorageError               object store / sync failure
    │   └── CommitConflict         a workspace head moved under a commit
    ├── AgentError                 control plane could not talk to an agent
    └── ClientError                SDK/CLI side: server unreachable or answered an error

Every error carries ``status_code`` (the HTTP status it maps to) and may carry a machine
``code`` (a class default, or given where it is raised); the API renders any ``MagsError`` as
``{"error": str(exc)}`` -- plus ``"code"`` when it has one -- with that status.  Errors from third-party
libraries are translated where they enter our code (``raise ... from exc``).
"""

from __future__ import annotations


class MagsError(Exception):
    """Base of every error mags raises on purpose."""

    status_code: int = 500
    code: str | None = None

    def __init__(self, message: str = "", *, status_code: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(MagsError):
    status_code = 500


class ValidationError(MagsError):
    status_code = 400


class PayloadTooLarge(ValidationError):
    status_code = 413


class AuthError(MagsError):
    status_code = 401


class PermissionDenied(MagsError):
    status_code = 403


class NotFound(MagsError):
    status_code = 404


class Conflict(MagsError):
    status_code = 409


class RuntimeUnavailable(MagsError):
    status_code = 503


class SandboxError(MagsError):
    status_code = 500


class SandboxGone(SandboxError):
    status_code = 410


class ExecTimeout(SandboxError):
    status_code = 504


class ImageError(MagsError):
    status_code = 500


class StorageError(MagsError):
    status_code = 500


class CommitConflict(StorageError):
    status_code = 409


class AgentError(MagsError):
    status_code = 502


class ClientError(MagsError):
    """Raised by the SDK/CLI: the server could not be reached or answered an error."""

    status_code = 0


class QuotaExceeded(MagsError):
    """A submission would take a user past one of its quotas."""

    status_code = 429
    code = "quota_exceeded"


class NotEnoughDiskSpace(SandboxError):
    """A disk image does not fit in what the host filesystem can still promise."""

    status_code = 507
