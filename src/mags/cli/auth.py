"""``mags login``, ``logout``, ``whoami``: the token saved in ``~/.mags/config.json``."""

from __future__ import annotations

import os

import click

from mags.cli.context import State, pass_state
from mags.cli.output import echo_err, print_fields, print_json
from mags.errors import ClientError, ConfigError


def _saved_config() -> dict:
    from mags.sdk.credentials import load_config

    try:
        return load_config()
    except ConfigError as exc:
        echo_err(f"warning: {exc}; it will be replaced", fg="yellow")
        return {}


@click.command("login")
@click.option("--token", help="API token (prompted for when omitted; avoid shell history).")
@click.option(
    "--url",
    "api_url",
    metavar="URL",
    help="Server URL (default: MAGS_API_URL, saved, http://127.0.0.1:8090).",
)
@pass_state
def login_cmd(state: State, token: str | None, api_url: str | None) -> None:
    """Verify an API token and save it (with the server URL) to ~/.mags/config.json.

    \b
    Examples:
      mags login
      mags login --url https://mags.example.com
      mags token create --name laptop    # admins: make a token for someone
    """
    from mags.sdk.credentials import DEFAULT_API_URL, URL_ENV_VAR, normalize_api_url, save_config

    config = _saved_config()
    url = normalize_api_url(
        api_url or os.environ.get(URL_ENV_VAR) or config.get("api_url") or DEFAULT_API_URL
    )
    if not token:
        echo_err(f"Get an API token from the dashboard at {url}/ or from an admin (`mags token create`).")
        token = click.prompt("Paste your API token", hide_input=True, err=True).strip()
    if not token:
        raise click.UsageError("no token given")
    with state.make_client(api_token=token, api_url=url) as client:
        who = client.whoami()
    config.pop("token", None)  # older CLIs' key; api_token replaces it
    path = save_config({**config, "api_url": url, "api_token": token})
    admin = " (admin)" if who.get("admin") else ""
    click.echo(f"Logged in to {url} as {who.get('user')}{admin}. Saved to {path}")
    env_token = os.environ.get("MAGS_API_TOKEN")
    if env_token and env_token != token:
        echo_err("note: MAGS_API_TOKEN is set and takes precedence over the saved token", fg="yellow")


@click.command("logout")
def logout_cmd() -> None:
    """Remove the saved API token (the server URL stays).

    \b
    Example:
      mags logout
    """
    from mags.sdk.credentials import config_path, save_config

    config = _saved_config()
    had = bool(config.pop("api_token", None)) | bool(config.pop("token", None))
    if config_path().exists():
        save_config(config)
    click.echo(f"Logged out (token removed from {config_path()})" if had else "Not logged in.")
    if os.environ.get("MAGS_API_TOKEN"):
        echo_err("note: MAGS_API_TOKEN is still set in your environment", fg="yellow")


@click.command("whoami")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_state
def whoami_cmd(state: State, as_json: bool) -> None:
    """Show who the current token belongs to, and which server is used.

    \b
    Example:
      mags whoami
    """
    from mags.sdk.credentials import resolve_credentials

    creds = resolve_credentials()
    if not creds.api_token:
        raise ClientError("not logged in: run `mags login` or set MAGS_API_TOKEN", status_code=401)
    who = state.client().whoami()
    info = {**who, "server": creds.api_url, "token_source": creds.token_source}
    if as_json:
        print_json(info)
        return
    user = f"{who.get('user')}{' (admin)' if who.get('admin') else ''}"
    token = f"{who.get('token_name') or '-'} (from {creds.token_source})"
    print_fields({"user": user, "token": token, "server": creds.api_url}, ["user", "token", "server"])


COMMANDS = [login_cmd, logout_cmd, whoami_cmd]
