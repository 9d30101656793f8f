"""``python -m emulator``: start the local Azure and print one JSON line with its endpoints when ready.

Options seed vaults (``--vault``) or a small fleet (``--fleet``) so another process can start working at once;
everything else is driven over the admin API. Stops cleanly on SIGINT or SIGTERM.

``--endpoints-file FILE`` writes the same JSON line to FILE, which ``python -m rotation --emulator FILE`` reads; it
holds the topic key, so only the user may read it, and it is removed when the emulator stops (its ports and CA are
gone then). ``--targets-file FILE`` writes the fleet's ``ROTATION_TARGETS``. Each file is written whole (a new file
renamed into place) before the JSON line is printed, so a reader that waits for the endpoints file finds the targets
file too and never reads half of either. The fleet::

    vault contoso-cmk (purge protection)
    └── key aoai-cmk, RSA 2048, wrapKey and unwrapKey, expires in 20 days (due: the service renews 30 days ahead)
        ├── subscription ...0001  rg-ai/openai-east-1, rg-ai/openai-east-2, rg-ai/openai-east-3   in the targets
        └── subscription ...0002  rg-ai/openai-west-1                                             in the targets
                                  rg-ai/openai-unmanaged        not in the targets: for ``discover`` to find
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

from emulator.core import Emulator
from emulator.fleet import FLEET_KEY, FLEET_VAULT, seed_fleet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__.splitlines()[0])
    parser.add_argument("--vault", action="append", default=[], metavar="NAME", help="create a vault (repeatable)")
    parser.add_argument("--location", default="eastus", help="the default region (default: eastus)")
    parser.add_argument("--state-dir", type=Path, help="where to write the CA bundle (default: a temporary folder)")
    parser.add_argument(
        "--arm-throttle-scale", type=float, default=1.0, help="multiply ARM's throttling limits (default: 1)"
    )
    parser.add_argument(
        "--fleet",
        action="store_true",
        help=f"seed vault {FLEET_VAULT} with key {FLEET_KEY} (expires in 20 days), four accounts on it in two "
        "subscriptions, and one more that the targets do not list",
    )
    parser.add_argument(
        "--endpoints-file",
        type=Path,
        metavar="FILE",
        help="also write the endpoints JSON to FILE (readable only by you; removed when the emulator stops)",
    )
    parser.add_argument(
        "--targets-file", type=Path, metavar="FILE", help="write the fleet's ROTATION_TARGETS JSON to FILE (--fleet)"
    )
    args = parser.parse_args(argv)
    if args.arm_throttle_scale <= 0:
        parser.error(f"--arm-throttle-scale must be positive; got {args.arm_throttle_scale}")
    if args.targets_file is not None and not args.fleet:
        parser.error("--targets-file writes the fleet's targets: add --fleet")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with Emulator(
        location=args.location, state_dir=args.state_dir, arm_throttle_scale=args.arm_throttle_scale
    ) as emulator:
        for name in args.vault:
            try:
                emulator.add_vault(name)
            except ValueError as exc:
                parser.error(str(exc))
        if args.fleet:
            try:
                targets = seed_fleet(emulator)
            except ValueError as exc:  # --vault named the fleet's vault
                parser.error(f"--fleet: {exc}")
            if args.targets_file is not None:
                _write(parser, "--targets-file", args.targets_file, json.dumps(targets, indent=2))
        endpoints = json.dumps(emulator.endpoints())
        if args.endpoints_file is not None:
            _write(parser, "--endpoints-file", args.endpoints_file, endpoints)
        try:
            print(endpoints, flush=True)
            stop.wait()
        finally:
            if args.endpoints_file is not None:
                args.endpoints_file.unlink(missing_ok=True)
    return 0


def _write(parser: argparse.ArgumentParser, option: str, path: Path, text: str) -> None:
    """``text`` into ``path``, readable only by the user: a new file renamed over ``path``, so that a reader sees
    either nothing or all of it. A path that cannot be written is argparse's error, naming the option."""
    try:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    except OSError as exc:
        parser.error(f"{option} {path}: its folder cannot be written ({exc.strerror or type(exc).__name__})")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text + "\n")
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        parser.error(f"{option} {path} cannot be written ({exc.strerror or type(exc).__name__})")


if __name__ == "__main__":
    sys.exit(main())
