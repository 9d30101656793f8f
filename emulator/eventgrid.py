"""Event Grid: Key Vault system events, delivery, and a custom topic. SKELETON: the Event Grid helper fills this in."""

from __future__ import annotations

import base64
import secrets
from typing import TYPE_CHECKING

from emulator.http import Service

if TYPE_CHECKING:
    from emulator.admin import AdminService
    from emulator.core import Emulator


class TopicService(Service):
    name = "eventgrid"


class EventGrid:
    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.topic_key = base64.b64encode(secrets.token_bytes(32)).decode()
        self.topic_service = TopicService()

    def stop(self) -> None:
        pass

    def register_admin(self, admin: AdminService) -> None:
        pass
