"""Event-driven customer-managed-key rotation for Azure OpenAI / AI services accounts.

The engine (``rotation.engine``) reads the world once into an ``Observation``, decides in pure functions
(``rotation.preflight``, ``rotation.policies``, ``rotation.plan``), then acts only through the two ports in
``rotation.ports``. Nothing in this package imports the Azure Functions library; triggers live in ``function_app.py``.
"""
