"""``python -m emulator``: start the local Azure and print one JSON line with its endpoints when ready.

Options seed vaults so another process can start working at once; everything else is driven over the admin API.
Stops cleanly on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from emulator.core import Emulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__.splitlines()[0])
    parser.add_argument("--vault", action="append", default=[], metavar="NAME", help="create a vault (repeatable)")
    parser.add_argument("--location", default="eastus", help="the default region (default: eastus)")
    parser.add_argument("--state-dir", type=Path, help="where to write the CA bundle (default: a temporary folder)")
    parser.add_argument(
        "--arm-throttle-scale", type=float, default=1.0, help="multiply ARM's throttling limits (default: 1)"
    )
    args = parser.parse_args(argv)
    if args.arm_throttle_scale <= 0:
        parser.error(f"--arm-throttle-scale must be positive; got {args.arm_throttle_scale}")

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
        print(json.dumps(emulator.endpoints()), flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
