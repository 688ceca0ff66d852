"""An institution's lifetime privacy account: what it can guarantee itself, over every run.

The coordinator's accountant (`accountant.PrivacyAccountant`) starts at epsilon 0 with every
run, relies on the coordinator's sampling rate and, without secure aggregation, on noise the
coordinator adds itself. A coordinator that starts run after run, each within the
institution's policy, exposes the institution's data again and again. This account is kept by
the institution instead, and charges each round it sends an update in with only what the
institution itself can guarantee:

- `CLIENT` (the unit is the institution's whole round contribution, clipped to C):
  under secure aggregation, the Gaussian mechanism with the noise share the institution adds
  itself (multiplier = its share's std / C). The other institutions' shares are not counted:
  a malicious coordinator can enrol Sybils that add none, or pad a sparse round
  (docs/threat-model.md), and then the sum minus its own contributions is this update plus
  this share. Without secure aggregation the coordinator adds the noise and sees the update:
  nothing is guaranteed locally, and the round is charged as infinite.
- `EXAMPLE` (one training row): DP-SGD's own steps, at the institution's own Poisson sampling
  of its rows (which it performs, so that amplification is real), exactly as its per-run
  accountant counts them.

No amplification by the coordinator's sampling of institutions is credited: the institution
cannot verify it, and the coordinator knows who took part anyway. So the account overstates
epsilon when sampling is real. Rounds compose by adding RDP curves (tighter than adding
epsilons, and independent of any run's delta); the total is converted to epsilon at the
institution's own delta with the accountant's conversion. Charges with the same noise and
rate are grouped and multiplied, so one constant mechanism gives bit for bit the accountant's
`epsilon_for`.

The account is folded from the institution's signed ledger (`PRIVACY_CHARGE` records; reading
and verifying it: `account_ledger`). This module is pure arithmetic over those records.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from fedpeft.common.errors import SecurityError
from fedpeft.common.privacy.accountant import epsilon_of_rdp, rdp_of

CLIENT = "client"
"""Unit: the institution's whole update of a round (client-level DP)."""
EXAMPLE = "example"
"""Unit: one of the institution's training rows (example-level DP-SGD)."""
UNITS = (CLIENT, EXAMPLE)

PRIVACY_CHARGE = "privacy-charge"
"""Ledger record: one round's charge, written before the round's update leaves."""
ACCOUNT_OPENED = "privacy-account-opened"
"""Ledger record: the account was started on purpose (`fedpeft client account --start`).
Under a lifetime cap a ledger without it is refused, so a deleted ledger that a later record
re-creates does not read as nothing spent."""
UPDATE_SENT = "update-sent"


@dataclass(frozen=True)
class Charge:
    """What one unit of the institution's data is charged for one round."""

    noise_multiplier: float | None
    """The Gaussian's std over the sensitivity; None or 0: nothing guaranteed locally."""
    sampling_rate: float = 1.0
    steps: int = 1
    basis: str = ""
    """Why this charge, for the account's reader ("own noise share under masking", ...)."""

    @property
    def guaranteed(self) -> bool:
        return self.noise_multiplier is not None and self.noise_multiplier > 0

    def to_json(self) -> dict[str, Any]:
        return {"noise_multiplier": self.noise_multiplier if self.guaranteed else None,
                "sampling_rate": self.sampling_rate, "steps": self.steps, "basis": self.basis}

    @classmethod
    def from_json(cls, data: object) -> Charge:
        """The charge a record states; SecurityError when it is not one (a charge that cannot
        be read must not count as nothing)."""
        try:
            assert isinstance(data, Mapping)
            z = data["noise_multiplier"]
            charge = cls(None if z is None else float(z), float(data["sampling_rate"]),
                         int(data["steps"]), str(data.get("basis", "")))
        except (AssertionError, KeyError, TypeError, ValueError):
            raise SecurityError(f"a {PRIVACY_CHARGE} record without a readable charge") from None
        if not 0 <= charge.sampling_rate <= 1 or charge.steps < 0:
            raise SecurityError(f"a {PRIVACY_CHARGE} record with an impossible charge")
        return charge


@dataclass(frozen=True)
class UnitAccount:
    """One unit's lifetime: the guaranteed steps grouped by mechanism, and the rounds that had
    no local guarantee (any one makes the epsilon infinite)."""

    rounds: int = 0
    steps: Mapping[tuple[float, float], int] = field(default_factory=dict)
    unguaranteed: int = 0
    last_basis: str | None = None
    """Why the last unguaranteed round was not guaranteed."""

    def charged(self, charge: Charge) -> UnitAccount:
        if not charge.guaranteed:
            return replace(self, rounds=self.rounds + 1, unguaranteed=self.unguaranteed + 1,
                           last_basis=charge.basis)
        assert charge.noise_multiplier is not None
        key = (charge.noise_multiplier, charge.sampling_rate)
        steps = {**self.steps, key: self.steps.get(key, 0) + charge.steps}
        return replace(self, rounds=self.rounds + 1, steps=steps)

    def epsilon(self, delta: float) -> float:
        """Epsilon at `delta` of every round charged so far; inf if one had no guarantee."""
        if self.unguaranteed:
            return math.inf
        curves = [rdp_of(z, q, steps) for (z, q), steps in sorted(self.steps.items())]
        if not curves:
            return 0.0
        return epsilon_of_rdp(sum(curves[1:], curves[0]), delta)


@dataclass(frozen=True)
class LifetimeAccount:
    """The institution's account as its ledger states it."""

    units: Mapping[str, UnitAccount] = field(
        default_factory=lambda: {unit: UnitAccount() for unit in UNITS})
    runs: frozenset[tuple[str, int]] = frozenset()
    """(federation id, run id) of every run charged."""
    uncharged: int = 0
    """Updates the ledger says were sent without a charge (written before this account
    existed): each counts as a round with no local guarantee."""
    opened: bool = False
    """Whether the ledger holds `ACCOUNT_OPENED` (required under a lifetime cap)."""

    def charged(self, charges: Mapping[str, Charge]) -> LifetimeAccount:
        """The account after one more round charged with `charges` (one per unit)."""
        return replace(self, units={unit: self.units[unit].charged(charges[unit])
                                    for unit in UNITS})

    def epsilon(self, unit: str, delta: float) -> float:
        return math.inf if self.uncharged else self.units[unit].epsilon(delta)

    def epsilon_after(self, unit: str, charge: Charge, delta: float) -> float:
        """`unit`'s epsilon if one more round were charged `charge`: asked before the round."""
        return math.inf if self.uncharged else self.units[unit].charged(charge).epsilon(delta)

    @property
    def rounds(self) -> int:
        return self.units[CLIENT].rounds + self.uncharged


def account_of(records: Iterable[Mapping[str, Any]]) -> LifetimeAccount:
    """Fold a verified ledger's records (`kind`, `body`) into the account."""
    account = LifetimeAccount()
    charged: set[tuple[object, object, object]] = set()
    sent: set[tuple[object, object, object]] = set()
    runs: set[tuple[str, int]] = set()
    for record in records:
        kind, body = record.get("kind"), record.get("body")
        if not isinstance(body, Mapping):
            continue
        where = (body.get("federation_id"), body.get("run_id"), body.get("round"))
        if kind == ACCOUNT_OPENED:
            account = replace(account, opened=True)
        elif kind == PRIVACY_CHARGE:
            account = account.charged({unit: Charge.from_json(body.get(unit)) for unit in UNITS})
            charged.add(where)
            runs.add(_run_of(body))
        elif kind == UPDATE_SENT:
            sent.add(where)
    return replace(account, runs=frozenset(runs), uncharged=len(sent - charged))


def _run_of(body: Mapping[str, Any]) -> tuple[str, int]:
    federation, run = body.get("federation_id"), body.get("run_id")
    if not isinstance(federation, str) or not isinstance(run, int) or isinstance(run, bool):
        raise SecurityError(f"a {PRIVACY_CHARGE} record that names no run")
    return federation, run


def charge_body(federation_id: str, run_id: int, server_round: int,
                charges: Mapping[str, Charge]) -> dict[str, Any]:
    """The `PRIVACY_CHARGE` record's body for one round."""
    return {"federation_id": federation_id, "run_id": run_id, "round": server_round,
            **{unit: charges[unit].to_json() for unit in UNITS}}


def account_lines(account: LifetimeAccount, delta: float) -> list[str]:
    """The account in a few lines of plain text, for the institution's command and the report."""
    lines = [f"{account.rounds} round(s) charged over {len(account.runs)} run(s); "
             f"account {'opened' if account.opened else 'not opened (no lifetime cap possible)'}"]
    for unit in UNITS:
        epsilon = account.epsilon(unit, delta)
        shown = (f"{epsilon:.4g}" if math.isfinite(epsilon)
                 else "infinite (not guaranteed locally: "
                      f"{account.units[unit].last_basis or 'updates sent without a charge'})")
        lines.append(f"{unit}-level epsilon at delta {delta:g}: {shown}")
    if account.uncharged:
        lines.append(f"{account.uncharged} update(s) sent before the account existed count as "
                     "not guaranteed")
    return lines
