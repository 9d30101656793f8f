"""``python -m rotation``: the operator CLI (rotation/cli.py). Must never hold logic of its own."""

from rotation.cli import console

console()
