"""The roster each institution authenticates its secure-aggregation neighbours with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedpeft.client.peers import load_roster
from fedpeft.common.crypto import fingerprint, load_signing_public_key
from fedpeft.common.errors import SecurityError
from fedpeft.deployment.enrolment import add_institution, init_federation, revoke_institution
from fedpeft.deployment.federation_files import FederationFolder
from fedpeft.deployment.roster import PEERS_FILE


def test_every_bundle_names_every_active_institution_with_its_enrolled_key(tmp_path: Path
                                                                          ) -> None:
    root = tmp_path / "fed"
    federation_id = init_federation(root, ["127.0.0.1"]).federation_id
    for name in ("bank-a", "bank-b", "bank-c"):
        add_institution(root, name)
    folder = FederationFolder(root)
    for name in ("bank-a", "bank-b", "bank-c"):
        roster = load_roster(str(folder.bundle(name).root), federation_id)
        assert sorted(roster) == ["bank-a", "bank-b", "bank-c"]  # the first bundle refreshed too
        for peer, key in roster.items():
            assert fingerprint(key) == fingerprint(load_signing_public_key(
                folder.bundle(peer).signing_pub))
    revoke_institution(root, "bank-b")
    assert sorted(load_roster(str(folder.bundle("bank-a").root), federation_id)) == [
        "bank-a", "bank-c"]


def test_a_missing_or_foreign_roster_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "fed"
    federation_id = init_federation(root, ["127.0.0.1"]).federation_id
    add_institution(root, "bank-a")
    bundle = FederationFolder(root).bundle("bank-a").root
    with pytest.raises(SecurityError, match="this institution belongs to 'fed-other'"):
        load_roster(str(bundle), "fed-other")
    text = json.loads((bundle / PEERS_FILE).read_text())
    (bundle / PEERS_FILE).write_text(json.dumps({**text, "extra": 1}))
    with pytest.raises(SecurityError, match="malformed roster"):
        load_roster(str(bundle), federation_id)
    (bundle / PEERS_FILE).unlink()
    with pytest.raises(SecurityError, match="no roster of enrolled institutions"):
        load_roster(str(bundle), federation_id)
