"""Where a request goes: its classification and the Router contract, below both the control
plane and the data plane (may import ``http`` and ``slots`` only)."""
