"""Throw-away credentials for one simulated federation.

A simulation seals and signs exactly as a deployment does, so it needs the same files: the
server's keys, one signing key per virtual institution and a registry. They are made with the
same functions as in a deployment, playing both roles: each virtual institution makes its own
bundle and request (`init_bundle`), the coordinator enrols it (`add_institution`), the
institution completes its bundle from the reply (`complete_bundle`). Everything lives in a
private (0700) folder (`federation/` and `bundles/NAME/`) inside the run's checkpoint folder as
long as the run (a crashed run keeps it, so that `fedpeft resume` signs on with the same keys)
and is removed when the run completes; only public-key fingerprints are kept, in the run's
`summary.json`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fedpeft.common.config import RunConfig
from fedpeft.common.errors import DataError
from fedpeft.deployment.bundle import complete_bundle, init_bundle
from fedpeft.deployment.enrolment import add_institution, init_federation
from fedpeft.deployment.federation_files import (
    FederationFolder,
    InstitutionBundle,
    credential_name,
    simulated_bundle,
)


def run_credentials(keys_dir: Path, institutions: list[str]) -> tuple[Path, str]:
    """(federation folder, federation id) under `keys_dir` (a private folder of the run),
    made on first use and read back when the run is resumed: a resumed run must sign its
    ledger, and its institutions theirs, with the keys that started them."""
    folder = keys_dir / "federation"
    if folder.is_dir():
        return folder, FederationFolder(folder).manifest().federation_id
    names = [credential_name(name) for name in institutions]
    if len(set(names)) != len(names):
        raise DataError(f"data.partition: institution names collide once made file names: "
                        f"{institutions}")
    manifest = init_federation(folder, ["127.0.0.1"])
    for name in names:
        bundle = simulated_bundle(folder, name).root
        init_bundle(bundle, name)
        add_institution(folder, name, InstitutionBundle(bundle).request_path)
    for name in names:  # after every enrolment, so each bundle's roster names them all
        complete_bundle(simulated_bundle(folder, name).root,
                        FederationFolder(folder).reply(name).root)
    return folder, manifest.federation_id


@contextmanager
def ephemeral_credentials(institutions: list[str]) -> Iterator[tuple[Path, str]]:
    """(federation folder, federation id) for `institutions`, deleted on exit."""
    scratch = Path(tempfile.mkdtemp(prefix="fedpeft-sim-keys-"))  # mode 0700
    try:
        yield run_credentials(scratch, institutions)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def with_credentials(cfg: RunConfig, folder: Path, federation_id: str) -> RunConfig:
    """`cfg` pointing the aggregator and the virtual institutions at `folder`."""
    security = cfg.security.model_copy(
        update={"credentials_dir": str(folder), "federation_id": federation_id})
    return cfg.model_copy(update={"security": security})
