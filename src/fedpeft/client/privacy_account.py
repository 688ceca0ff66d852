"""This institution's lifetime privacy account, kept and enforced by the institution itself.

What a round is charged and how rounds compose: `fedpeft.common.privacy.lifetime`; where the
account lives and how a deleted or edited one is refused: `...privacy.account_ledger`. Here:

- `check_round` before a round is trained (admission for the client-level charge, which the
  message fixes; the DP-SGD budget callback for the example-level one, which training fixes):
  a round that would take the account past the policy's cap is refused before a row is read
  or a step taken;
- `charge_round` after training and before any protection stage: checks both charges again
  and appends the round's `privacy-charge` to the institution's ledger under a lock, so two
  ClientApp processes cannot both spend what is left, and no update leaves uncharged (a
  charge that cannot be written stops the round). An update refused later in the chain was
  charged anyway: the account errs towards more spent, never less.

The account is the institution's whatever the run says: `audit.ledger = false` in a run
config switches off the `update-sent` records, not the charges.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from flwr.app import ConfigRecord

from fedpeft.client.identity import InstitutionKeys
from fedpeft.client.stages.ledger import record_event
from fedpeft.common.audit import LEDGER_FILE
from fedpeft.common.config import RunConfig
from fedpeft.common.config.policy import InstitutionPolicy
from fedpeft.common.errors import SecurityError
from fedpeft.common.privacy.account_ledger import AccountMissing, read_account
from fedpeft.common.privacy.lifetime import (
    ACCOUNT_OPENED,
    CLIENT,
    EXAMPLE,
    PRIVACY_CHARGE,
    UNITS,
    Charge,
    LifetimeAccount,
    charge_body,
)
from fedpeft.common.wire.names import DP_CLIP_NORM, DP_NOISE_STD

logger = logging.getLogger(__name__)

CAP_FIELDS = {CLIENT: "max_lifetime_epsilon", EXAMPLE: "max_lifetime_example_epsilon"}


def ledger_path(keys: InstitutionKeys) -> Path:
    return Path(keys.state_dir) / LEDGER_FILE


def client_charge(cfg: RunConfig, config: ConfigRecord) -> Charge:
    """The client-level charge of a round: the institution's own noise share over the bound,
    under secure aggregation; not guaranteed locally otherwise."""
    if not cfg.privacy.enabled:
        return Charge(None, basis="no client-level DP")
    if not cfg.secure_aggregation.enabled:
        return Charge(None, basis="central noise: the coordinator adds it and sees the update")
    std, bound = config.get(DP_NOISE_STD), config.get(DP_CLIP_NORM)
    if not isinstance(std, (int, float)) or not isinstance(bound, (int, float)) or bound <= 0:
        return Charge(None, basis="no noise share in the message")
    return Charge(float(std) / float(bound), basis="own noise share under secure aggregation")


def example_charge(cfg: RunConfig, steps: int, sampling_rate: float) -> Charge:
    """The example-level charge of a round: its DP-SGD steps at the institution's own sampling
    of its rows."""
    if not cfg.privacy.example_level:
        return Charge(None, basis="no example-level DP-SGD")
    return Charge(cfg.privacy.example_noise_multiplier, sampling_rate, steps,
                  basis="DP-SGD on its own rows")


def current_account(keys: InstitutionKeys, policy: InstitutionPolicy) -> LifetimeAccount:
    """The account in this institution's ledger, verified with its own key. Under a cap the
    ledger must exist and have been opened on purpose; without one, no ledger yet is an empty
    account (it starts with the first record)."""
    path = ledger_path(keys)
    if not policy.caps_lifetime and not path.exists():
        return LifetimeAccount()
    account, _ = read_account(path, keys.signing_key.public_key())
    if policy.caps_lifetime and not account.opened:
        raise AccountMissing(f"{path} holds no {ACCOUNT_OPENED} record (it was re-created after "
                             "a deletion, or never started with `fedpeft client account "
                             "--start`); refusing to count it as nothing spent")
    return account


def check_round(policy: InstitutionPolicy, account: LifetimeAccount, unit: str,
                charge: Charge) -> None:
    """Return only if charging `charge` keeps `unit` within the policy's cap; SecurityError
    (one line) otherwise."""
    cap = getattr(policy, CAP_FIELDS[unit])
    if cap is None:
        return
    delta = policy.lifetime_delta
    after = account.epsilon_after(unit, charge, delta)
    if after <= cap:
        return
    spent = account.epsilon(unit, delta)
    why = ""
    if account.uncharged:
        why = f", {account.uncharged} update(s) of its ledger sent without a charge"
    elif not charge.guaranteed:
        why = f", {charge.basis}: not guaranteed locally"
    elif not math.isfinite(spent):
        why = ", an earlier round had no local guarantee"
    raise SecurityError(f"this round would take the lifetime {unit}-level epsilon from "
                        f"{spent:.4g} to {after:.4g} (delta {delta:g}{why}), past this "
                        f"institution's {CAP_FIELDS[unit]}={cap:g}: refused")


def check_next_round(keys: InstitutionKeys, policy: InstitutionPolicy, unit: str,
                     charge: Charge) -> None:
    """`check_round` against the account as the ledger states it now."""
    if getattr(policy, CAP_FIELDS[unit]) is not None:
        check_round(policy, current_account(keys, policy), unit, charge)


def charge_round(keys: InstitutionKeys, policy: InstitutionPolicy, run_id: int,
                 server_round: int, charges: Mapping[str, Charge]) -> None:
    """Check and append this round's charges, atomically with respect to other charges."""
    with _locked(Path(keys.state_dir)):
        account = current_account(keys, policy)
        for unit in UNITS:
            check_round(policy, account, unit, charges[unit])
        record_event(keys, PRIVACY_CHARGE,
                     charge_body(keys.federation_id, run_id, server_round, charges))
    logger.info("%s: run %d round %d charged to the lifetime privacy account (%s)", keys.name,
                run_id, server_round,
                ", ".join(f"{unit}: {_described(charges[unit])}" for unit in UNITS))


def _described(charge: Charge) -> str:
    if not charge.guaranteed:
        return f"not guaranteed locally ({charge.basis})"
    return (f"noise multiplier {charge.noise_multiplier:.4g}, rate {charge.sampling_rate:.4g}, "
            f"{charge.steps} step(s)")


def open_account(keys: InstitutionKeys) -> bool:
    """Start the account in this institution's ledger (creating the ledger if needed); False
    when it was open already. Whatever the ledger already charges stays charged."""
    with _locked(Path(keys.state_dir)):
        path = ledger_path(keys)
        if path.exists() and read_account(path, keys.signing_key.public_key())[0].opened:
            return False
        record_event(keys, ACCOUNT_OPENED, {"federation_id": keys.federation_id})
    return True


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on the state folder itself (no lock file left behind)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
