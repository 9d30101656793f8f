"""ARM: Microsoft.CognitiveServices accounts. SKELETON: the ARM helper fills this in."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emulator.http import Service

if TYPE_CHECKING:
    from emulator.admin import AdminService
    from emulator.core import Emulator


class ArmService(Service):
    name = "arm"


class Arm:
    def __init__(self, emulator: Emulator, *, throttle_scale: float = 1.0) -> None:
        self.emulator = emulator
        self.service = ArmService()

    def register_admin(self, admin: AdminService) -> None:
        pass
