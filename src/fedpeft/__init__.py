"""fedpeft: federated parameter-efficient fine-tuning on Flower.

The subpackages follow the round: `server` (ServerApp, strategies), `client` (ClientApp and its
protection stages), `common` (what both sides share: config, data, model, training, crypto,
the wire format), `simulation` (one machine), `deployment` (operator tooling for a real
federation), `report` and `cli`.
"""

import os

# Institutions run fedpeft on networks that must not phone home: Flower's usage telemetry is
# off unless the operator turns it on explicitly. Set before any `flwr` import reads it.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

__version__ = "0.1.0"
