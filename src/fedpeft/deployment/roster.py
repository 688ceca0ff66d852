"""The roster in every institution's bundle: the enrolled institutions' public signing keys.

Secure aggregation against a malicious coordinator needs each institution to authenticate its
neighbours' advertised keys, and an institution knows only the server's keys from enrolment.
So the coordinator's enrolment commands write `peers.json` (every active institution's name
and Ed25519 public key, the same as the registry) into each institution's reply folder
(`FED/institutions/NAME/`), and rewrite it whenever an institution is added or revoked;
`fedpeft institution complete` copies it into the bundle. The institution reads it from its own
bundle only (`fedpeft.client.peers`). An institution whose bundle was completed before another
was added must copy the refreshed `peers.json` (public data) from its reply folder into its
bundle before it can be that one's neighbour.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict

from fedpeft.common.crypto.keys import PUBLIC_FILE_MODE, write_file_atomically
from fedpeft.deployment.federation_files import FederationFolder

PEERS_FILE = "peers.json"


class Roster(BaseModel):
    """`peers.json`: which federation, and each active institution's signing key (PEM)."""

    model_config = ConfigDict(extra="forbid")

    federation_id: str
    institutions: dict[str, str]


def current_roster(folder: FederationFolder) -> Roster:
    """The roster of the registry as it stands: active institutions with a signing key."""
    institutions = {
        name: record.signing_public_key
        for name, record in folder.registry().institutions.items()
        if record.status == "active" and record.signing_public_key is not None
    }
    return Roster(federation_id=folder.manifest().federation_id, institutions=institutions)


def write_rosters(folder: FederationFolder) -> Roster:
    """Write the current roster into every institution's reply folder inside `folder`."""
    roster = current_roster(folder)
    text = json.dumps(roster.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    for name in roster.institutions:
        reply = folder.reply(name)
        if reply.root.is_dir():
            write_file_atomically(reply.root / PEERS_FILE, text.encode("utf-8"),
                                  mode=PUBLIC_FILE_MODE, overwrite=True)
    return roster
