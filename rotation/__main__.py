"""``python -m rotation``: the operator CLI (rotation/cli.py). Must never hold logic of its own."""

from rotation.cli import main
from rotation.log import install_redaction

install_redaction()  # as in the Functions app: no SAS signature in a library's debug line
raise SystemExit(main())
