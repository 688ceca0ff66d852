"""The institution's half of the sealed exchange: verify the global, seal the update.

The keys come from the institution's bundle (`fedpeft federation add-institution`): in a
deployment its path is the node config's `bundle` key, set by `fedpeft client join`; in a
simulation each virtual institution finds its ephemeral bundle in the run's temporary
credentials folder (`security.credentials_dir`, the same machine). The federation id the
client expects is its bundle's, never the one the server sends.

The run config arrives unsigned, so it cannot be what turns sealing off for a deployed
institution: a run with `security.seal_updates = false` is refused unless the institution's own
node config says `allow-plaintext="true"`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Message

from fedpeft.common.adapter.state import AdapterState
from fedpeft.common.config import RunConfig
from fedpeft.common.crypto import (
    EncryptionPublicKey,
    SigningPrivateKey,
    SigningPublicKey,
    load_encryption_public_key,
    load_signing_private_key,
    load_signing_public_key,
    seal_update,
    verify_global,
)
from fedpeft.common.errors import ConfigError, SecurityError
from fedpeft.common.federation_files import InstitutionBundle, credential_name
from fedpeft.common.protocol import (
    ALLOW_PLAINTEXT,
    ARRAYS,
    BUNDLE,
    PARTITION_ID,
    SEALED_UPDATE_STYPE,
    SIGNED_GLOBAL_STYPE,
)
from fedpeft.common.sealing import (
    envelope_of,
    envelope_record,
    global_context,
    global_version,
    update_context,
)


@dataclass(frozen=True)
class InstitutionKeys:
    """One institution's identity in its federation: who it is and whom it trusts."""

    name: str
    federation_id: str
    bundle_dir: str
    """Where the bundle lives; the institution's own ledger of what it sent is kept there."""
    signing_key: SigningPrivateKey
    server_signing_key: SigningPublicKey
    server_encryption_key: EncryptionPublicKey


@lru_cache(maxsize=16)
def load_institution_keys(bundle_dir: str) -> InstitutionKeys:
    """The keys in bundle folder `bundle_dir` (cached: a simulation actor serves many rounds)."""
    bundle = InstitutionBundle(Path(bundle_dir))
    manifest = bundle.manifest()
    return InstitutionKeys(
        name=manifest.name,
        federation_id=manifest.federation_id,
        bundle_dir=bundle_dir,
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
        keys = load_institution_keys(str(node[BUNDLE]))
    elif PARTITION_ID in node and cfg.security.credentials_dir:
        folder = Path(cfg.security.credentials_dir) / "institutions" / credential_name(data_name)
        keys = load_institution_keys(str(folder))
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


LAST_GLOBAL = "fedpeft-last-global"
"""Key in Flower's `Context.state` (per node and run) of the newest global version received."""


def open_global(msg: Message, keys: InstitutionKeys, server_round: int,
                context: Context) -> AdapterState:
    """The global adapter of `msg` after checking the server's signature and its context.

    The round number that names the global's version arrives in the unsigned config record, so
    a relay could present an older signed global of the same run with its old round number.
    The institution remembers the newest version it accepted in this run and refuses older ones
    (versions never decrease: training in round r and evaluation in round r - 1 share one).
    """
    blob = envelope_of(msg.content[ARRAYS], SIGNED_GLOBAL_STYPE)
    version = global_version(msg.metadata.message_type, server_round)
    seen = context.state.config_records.get(LAST_GLOBAL)
    newest = int(seen["version"]) if seen is not None else -1  # type: ignore[arg-type]
    if version < newest:
        raise SecurityError(
            f"global adapter version {version} is older than version {newest}, already "
            f"received in run {msg.metadata.run_id}: refused as a replay"
        )
    ctx = global_context(keys.federation_id, msg.metadata.run_id, version)
    state = verify_global(blob, ctx, keys.server_signing_key)
    context.state[LAST_GLOBAL] = ConfigRecord({"version": version})
    return state


def seal_state(state: AdapterState, msg: Message, keys: InstitutionKeys,
               server_round: int) -> ArrayRecord:
    """This institution's update, sealed to the aggregator and signed, as an ArrayRecord."""
    ctx = update_context(keys.federation_id, msg.metadata.run_id, server_round, keys.name)
    blob = seal_update(state, ctx, keys.server_encryption_key, keys.signing_key)
    return envelope_record(blob, SEALED_UPDATE_STYPE)


def sealed_sha256(record: ArrayRecord) -> str:
    """SHA-256 of the sealed envelope in `record`: the bytes the coordinator's ledger quotes."""
    return hashlib.sha256(envelope_of(record, SEALED_UPDATE_STYPE)).hexdigest()
