"""The institutions this institution accepts as secure-aggregation neighbours: its roster.

A neighbour's advertised keys are accepted only when signed by the enrolled key of an
institution named here (`fedpeft.common.crypto.secagg.authentication`). The roster is read
from the institution's own bundle (`peers.json`, written by the coordinator's enrolment
commands, `fedpeft.deployment.roster`), never from a message: a server compromised after
enrolment cannot add or swap a key in it. It is as trustworthy as the enrolment channel that
delivered the bundle; its SHA-256 is logged so that security officers can compare it out of
band (see docs/secure_aggregation.md).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from pydantic import ValidationError

from fedpeft.common.crypto import SigningPublicKey, signing_public_key_from_pem
from fedpeft.common.errors import SecurityError
from fedpeft.deployment.roster import PEERS_FILE, Roster

logger = logging.getLogger(__name__)


def load_roster(bundle_dir: str, federation_id: str) -> dict[str, SigningPublicKey]:
    """Name -> enrolled signing key of every institution in the bundle's roster."""
    path = Path(bundle_dir) / PEERS_FILE
    if not path.is_file():
        raise SecurityError(
            f"{path}: no roster of enrolled institutions, so secure-aggregation neighbours "
            "cannot be authenticated; ask the coordinator for the bundle's peers.json"
        )
    data = path.read_bytes()
    try:
        roster = Roster.model_validate_json(data)
    except ValidationError as err:
        raise SecurityError(f"{path}: malformed roster: {err.errors()[0]['msg']}") from None
    if roster.federation_id != federation_id:
        raise SecurityError(
            f"{path}: roster of federation {roster.federation_id!r}, this institution belongs "
            f"to {federation_id!r}"
        )
    keys = {name: signing_public_key_from_pem(pem.encode("ascii"), f"{path} [{name}]")
            for name, pem in roster.institutions.items()}
    logger.info("secure aggregation roster %s: %d institutions, sha256 %s", path, len(keys),
                hashlib.sha256(data).hexdigest())
    return keys
