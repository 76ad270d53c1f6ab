"""`python -m mags` is the `mags` command."""

from mags.cli.main import main

if __name__ == "__main__":
    main()
