"""`fedpeft client account`: the institution reads (or starts) its own lifetime privacy account.

It reads the ledger in the institution's state folder and verifies it with the institution's
own signing key, so a ledger re-signed by anyone else, or edited, is refused rather than shown.
"""

from __future__ import annotations

from pathlib import Path

from fedpeft.client.identity import load_institution_keys
from fedpeft.client.privacy_account import CAP_FIELDS, ledger_path, open_account
from fedpeft.common.audit import expectations_unmet
from fedpeft.common.config.policy import POLICY_FILE, InstitutionPolicy, load_policy
from fedpeft.common.errors import SecurityError
from fedpeft.common.privacy.account_ledger import read_account
from fedpeft.common.privacy.lifetime import UNITS, account_lines
from fedpeft.deployment.federation_files import default_state_dir


def _policy(bundle: Path, policy: Path | None) -> InstitutionPolicy:
    if policy is not None:
        return load_policy(policy)
    if (bundle / POLICY_FILE).is_file():
        return load_policy(bundle / POLICY_FILE)
    return InstitutionPolicy()


def account_report(bundle: Path, state_dir: Path | None, policy_file: Path | None, start: bool,
                   expect_head: str | None) -> list[str]:
    """The lines `fedpeft client account` prints; SecurityError when the account cannot be
    trusted (missing, edited, another signer, or not ending at `expect_head`)."""
    state = state_dir if state_dir is not None else default_state_dir(bundle)
    keys = load_institution_keys(str(bundle.resolve()), str(state.resolve()))
    policy = _policy(bundle, policy_file)
    lines = []
    if start:
        opened = open_account(keys)
        lines.append("account opened" if opened else "account was open already")
    account, report = read_account(ledger_path(keys), keys.signing_key.public_key())
    problem = expectations_unmet(report, allow_incomplete=True, expect_head=expect_head)
    if problem:
        raise SecurityError(f"{report.path}: {problem}")
    lines += [f"ledger {report.path}: {report.records} records, head {report.head}",
              *account_lines(account, policy.lifetime_delta)]
    for unit in UNITS:
        cap = getattr(policy, CAP_FIELDS[unit])
        if cap is not None:
            lines.append(f"policy {CAP_FIELDS[unit]} = {cap:g}")
    return lines
