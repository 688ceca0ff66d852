"""fedpeft: federated parameter-efficient fine-tuning on Flower.

The repository keeps `common/`, `client/`, `server/`, `simulation/` and `cli/` as top-level
folders; packaging maps each of them under this one namespace (`fedpeft.common`, ...). This
file lives in `namespace/`, not in a folder called `fedpeft/`: a `fedpeft/` folder at the
repository root would shadow the installed package for any process started there (Ray
workers put the working directory on their path) and hide every subpackage.
"""

import os

# Institutions run fedpeft on networks that must not phone home: Flower's usage telemetry is
# off unless the operator turns it on explicitly. Set before any `flwr` import reads it.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

__version__ = "0.1.0"
