"""The control coroutine: turns lemond's events and the slot policy into actions.

It sits between the data plane/admin API (which ask it where requests go and what slots
look like) and the lemond adapter (which it drives for loads and unloads). The slot domain
in ``hal0proxy.slots`` decides; this package executes.
"""
