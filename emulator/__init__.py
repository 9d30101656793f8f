"""A wire-level local Azure for tests and the demo: Key Vault keys, Cognitive Services accounts and Event Grid.

See ``emulator/README.md`` for what is emulated, what is not, and the admin API.
"""

from emulator.control import Clock, FaultRule
from emulator.core import Emulator
from emulator.credential import EmulatorCredential

__all__ = ["Clock", "Emulator", "EmulatorCredential", "FaultRule"]
