"""Who this institution is in its federation: its keys, from its bundle.

The keys come from the institution's bundle (`fedpeft institution init` / `complete`): in a
deployment its path is the node config's `bundle` key, set by `fedpeft client join`, and what
the institution writes (its ledger) goes to the node config's `state-dir`, so the bundle can be
mounted read-only; in a simulation each virtual institution finds its ephemeral bundle beside
the run's temporary credentials folder (`security.credentials_dir`, the same machine) and
writes into it. The federation id the client expects is its bundle's, never the one the server
sends.

The run config arrives unsigned, so it cannot be what turns sealing off for a deployed
institution: a run with `security.seal_updates = false` is refused unless the institution's own
node config says `allow-plaintext="true"`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from flwr.app import Context

from fedpeft.common.config import RunConfig
from fedpeft.common.crypto import (
    EncryptionPublicKey,
    SigningPrivateKey,
    SigningPublicKey,
    load_encryption_public_key,
    load_signing_private_key,
    load_signing_public_key,
)
from fedpeft.common.errors import ConfigError, SecurityError
from fedpeft.common.wire.names import ALLOW_PLAINTEXT, BUNDLE, PARTITION_ID, STATE_DIR
from fedpeft.deployment.federation_files import (
    InstitutionBundle,
    default_state_dir,
    simulated_bundle,
)


@dataclass(frozen=True)
class InstitutionKeys:
    """One institution's identity in its federation: who it is and whom it trusts."""

    name: str
    federation_id: str
    bundle_dir: str
    """Where the bundle lives (read only)."""
    state_dir: str
    """Where the institution writes: its own ledger of what it sent."""
    signing_key: SigningPrivateKey
    server_signing_key: SigningPublicKey
    server_encryption_key: EncryptionPublicKey


@lru_cache(maxsize=16)
def load_institution_keys(bundle_dir: str, state_dir: str) -> InstitutionKeys:
    """The keys in bundle folder `bundle_dir` (cached: a simulation actor serves many rounds)."""
    bundle = InstitutionBundle(Path(bundle_dir))
    manifest = bundle.manifest()
    return InstitutionKeys(
        name=manifest.name,
        federation_id=manifest.federation_id,
        bundle_dir=bundle_dir,
        state_dir=state_dir,
        signing_key=load_signing_private_key(bundle.signing_key),
        server_signing_key=load_signing_public_key(bundle.server_signing_pub),
        server_encryption_key=load_encryption_public_key(bundle.server_encryption_pub),
    )


def institution_keys(cfg: RunConfig, context: Context, data_name: str) -> InstitutionKeys | None:
    """This node's keys, or None when the run exchanges plaintext adapters (checked consent)."""
    node = context.node_config
    deployed = BUNDLE in node
    if not cfg.security.seal_updates:
        if deployed and str(node.get(ALLOW_PLAINTEXT, "")).lower() != "true":
            raise SecurityError(
                "the run asks for unsealed updates (security.seal_updates = false); this "
                f"institution only sends them with node config {ALLOW_PLAINTEXT}=\"true\""
            )
        return None
    if deployed:
        bundle_dir = Path(str(node[BUNDLE]))
        state_dir = node.get(STATE_DIR) or default_state_dir(bundle_dir)
        keys = load_institution_keys(str(bundle_dir), str(state_dir))
    elif PARTITION_ID in node and cfg.security.credentials_dir:
        folder = simulated_bundle(Path(cfg.security.credentials_dir), data_name).root
        keys = load_institution_keys(str(folder), str(folder))
    else:
        raise ConfigError(
            f"security.seal_updates is on but node config has no '{BUNDLE}': start the "
            "institution with `fedpeft client join --bundle DIR`"
        )
    if cfg.security.federation_id is not None and cfg.security.federation_id != keys.federation_id:
        raise SecurityError(
            f"the run belongs to federation {cfg.security.federation_id!r}, this institution "
            f"to {keys.federation_id!r}"
        )
    return keys
