"""``mags image build``: build the guest root filesystem image sandboxes start from."""

from __future__ import annotations

from pathlib import Path

import click

from mags.cli.context import CliError, OrderedGroup


@click.group("image", cls=OrderedGroup)
def image_group() -> None:
    """Manage sandbox images (on the server host, as root or with sudo).

    \b
    Example:
      mags image build
    """


@image_group.command("build")
@click.option("--name", default="standard", show_default=True, help="Image to build.")
@click.option("--force", is_flag=True, help="Rebuild even if the image exists.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="State directory (as for `mags server`).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML settings file.",
)
def image_build(name: str, force: bool, data_dir: Path | None, config_file: Path | None) -> None:
    """Build (or rebuild with --force) a sandbox image (as root, or with sudo).

    \b
    Examples:
      mags image build
      mags image build --force
    """
    from mags.config import load_settings

    settings = load_settings(config_file, data_dir=data_dir)
    try:
        from mags.runtime.image import build_image
    except ImportError as exc:
        raise CliError(f"image building is not available in this installation ({exc})") from exc
    result = build_image(settings, name, force=force)
    click.echo(f"Image '{name}' is ready" + (f": {result}" if result is not None else ""))


COMMANDS = [image_group]
