"""The roster each institution authenticates its secure-aggregation neighbours with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedpeft.client.peers import load_roster
from fedpeft.common.crypto import fingerprint, load_signing_public_key
from fedpeft.common.errors import SecurityError
from fedpeft.deployment.bundle import complete_bundle, init_bundle
from fedpeft.deployment.enrolment import add_institution, init_federation, revoke_institution
from fedpeft.deployment.federation_files import FederationFolder, InstitutionBundle
from fedpeft.deployment.roster import PEERS_FILE

NAMES = ("bank-a", "bank-b", "bank-c")


def _enrol(tmp_path: Path) -> tuple[Path, str]:
    """A federation whose institutions made their own keys; bundles completed after all
    were added (their rosters then name every one)."""
    root = tmp_path / "fed"
    federation_id = init_federation(root, ["127.0.0.1"]).federation_id
    for name in NAMES:
        init_bundle(tmp_path / name, name)
        add_institution(root, name, InstitutionBundle(tmp_path / name).request_path)
    for name in NAMES:
        complete_bundle(tmp_path / name, FederationFolder(root).reply(name).root)
    return root, federation_id


def test_every_bundle_names_every_active_institution_with_its_own_key(tmp_path: Path) -> None:
    root, federation_id = _enrol(tmp_path)
    for name in NAMES:
        roster = load_roster(str(tmp_path / name), federation_id)
        assert sorted(roster) == list(NAMES)
        for peer, key in roster.items():  # the key the institution made itself
            assert fingerprint(key) == fingerprint(load_signing_public_key(
                InstitutionBundle(tmp_path / peer).signing_pub))
    revoke_institution(root, "bank-b")
    reply = FederationFolder(root).reply("bank-a").root / PEERS_FILE
    assert sorted(json.loads(reply.read_text())["institutions"]) == ["bank-a", "bank-c"]


def test_a_missing_or_foreign_roster_is_refused(tmp_path: Path) -> None:
    _, federation_id = _enrol(tmp_path)
    bundle = tmp_path / "bank-a"
    with pytest.raises(SecurityError, match="this institution belongs to 'fed-other'"):
        load_roster(str(bundle), "fed-other")
    text = json.loads((bundle / PEERS_FILE).read_text())
    (bundle / PEERS_FILE).write_text(json.dumps({**text, "extra": 1}))
    with pytest.raises(SecurityError, match="malformed roster"):
        load_roster(str(bundle), federation_id)
    (bundle / PEERS_FILE).unlink()
    with pytest.raises(SecurityError, match="no roster of enrolled institutions"):
        load_roster(str(bundle), federation_id)
