"""Names of the records and keys in fedpeft's Flower messages, shared by server and client.

Flower strategies look for `arrays`, `config` and a MetricRecord holding `num-examples`; fedpeft
adds its run config to the config record and an `institution` ConfigRecord to each reply (FedAvg
only counts ArrayRecords and MetricRecords, so the extra record does not disturb it).
"""

from __future__ import annotations

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
INSTITUTION = "institution"

# keys inside the server's config record
RUN_CONFIG = "fedpeft-config"
NUM_ROUNDS = "num-rounds"
SERVER_ROUND = "server-round"  # added by Flower's strategies
PROXIMAL_MU = "proximal-mu"  # added by Flower's FedProx

DP_CLIP_NORM = "dp-clip-norm"
"""Client-level DP: the L2 bound each institution clips its round update to."""
DP_NOISE_STD = "dp-noise-std"
"""Under secure aggregation: the std of the Gaussian noise share each institution adds."""

# keys inside a reply's metric record
NUM_EXAMPLES = "num-examples"
COMPUTE_SECONDS = "compute-s"
"""Seconds the institution spent handling the message (data, model, training or evaluation):
everything else in a round's wall time is the framework's (transport, scheduling, aggregation)."""

SEAL_SECONDS = "seal-s"
"""Seconds the institution spent sealing and signing its update (part of compute-s)."""

DP_UNCLIPPED = "dp-unclipped"
"""1 when the update fitted under the clip norm before clipping (adaptive clipping's count)."""

DP_EXAMPLE_EPSILON = "dp-example-epsilon"
"""Example-level DP-SGD: the institution's own cumulative epsilon (at privacy.example_delta)
over every DP-SGD step it has taken in the run; infinite without noise. Per institution,
never averaged: each institution's guarantee is about its own rows."""

# keys inside a reply's institution record
INSTITUTION_NAME = "name"

# node_config keys
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
DATA_PATH = "data-path"
NODE_NAME = "name"
BUNDLE = "bundle"
"""Absolute path of the institution's bundle folder (its signing key and the server's keys)."""
STATE_DIR = "state-dir"
"""Absolute path of the institution's writable state folder (its own ledger); the bundle may be
read-only. Default: `BUNDLE-state` beside the bundle."""
ALLOW_PLAINTEXT = "allow-plaintext"
"""`true` lets a deployed institution honour a run with security.seal_updates = false."""

# the single Array of a sealed exchange, inside the `arrays` record
SEALED_ARRAY = "fedpeft-envelope"
SEALED_UPDATE_STYPE = "fedpeft/sealed-v1"
"""An institution's update: sealed to the aggregator, signed by the institution."""
SIGNED_GLOBAL_STYPE = "fedpeft/signed-global-v1"
"""The server's global adapter: signed by the server, readable by every institution."""

NON_AVERAGED_METRICS = frozenset({COMPUTE_SECONDS, SEAL_SECONDS, DP_UNCLIPPED, DP_EXAMPLE_EPSILON})
"""Reply metrics that describe the institution (its hardware, its own privacy spent), not the
model; kept per client only."""
LORA_RANK = "lora-rank"
