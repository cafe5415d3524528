"""`python -m console.cli`: the `expunge` command."""

from console.cli import main

main()
