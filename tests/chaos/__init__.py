"""The chaos suite: randomized schedules of triggers, workers, kills and faults, checked against invariants.

    test_chaos.py       the one test: loops over seeds, prints each seed and the counters, asserts no violation
    schedule.py         the action vocabulary and the seeded generator (pure)
    harness.py          the world (emulator, Azurite, bystander), one schedule's run, settling, the invariants
    wiring.py           RotationApp.build with every wait injected short
    transport.py        storage blips through the storage clients' azure-core transport
    processes.py        worker processes, one kept warm in reserve
    worker_process.py   the worker a process runs, stopped and killed at a step boundary

``make chaos`` runs 1,000 schedules; ``make test`` runs a short profile of 25. ``CHAOS_SEED=<n>`` replays one.
"""
