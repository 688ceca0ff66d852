"""An institution's own policy: the least protection it accepts from any run it joins.

The run config comes from the coordinator. Its signature (`fedpeft.common.wire.run_record`)
proves the server sent it, not that it is acceptable: a compromised or greedy coordinator can
sign a run without noise or masking, or one that loads code from a model repository. The
policy is the institution's answer, kept on its own machine (`policy.toml` in its bundle
folder, or `fedpeft client join --policy FILE`), and every run is checked against it before
the institution loads a model, reads a row or trains.

Never negotiable, whatever the policy says: `model.trust_remote_code = true` is refused (the
model folder's Python would run with access to the institution's data).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import tomllib
from pydantic import Field, ValidationError

from fedpeft.common.config.base import StrictModel
from fedpeft.common.config.models import RunConfig
from fedpeft.common.errors import ConfigError, SecurityError

POLICY_FILE = "policy.toml"
"""The policy's name inside an institution's bundle folder."""


class AllowedModel(StrictModel):
    """A base model the institution agrees to load."""

    name: str = Field(min_length=1, description="model.name exactly as the run config names it.")
    sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$",
        description="Content hash of the model folder (`fedpeft client model-hash DIR`); None "
        "accepts the name alone.",
    )


class InstitutionPolicy(StrictModel):
    """What this institution requires of a run before it takes part. Defaults: any local
    model, sealing required, no minimum privacy."""

    allowed_models: list[AllowedModel] | None = Field(
        None, description="Base models this institution loads; None: any (never remote code).")
    require_sealing: bool = Field(
        True, description="Refuse runs with security.seal_updates = false.")
    require_secure_aggregation: bool = Field(
        False, description="Refuse runs whose updates the aggregator could read one by one.")
    require_privacy: bool = Field(False, description="Refuse runs without client-level DP.")
    min_noise_multiplier: float | None = Field(
        None, ge=0, description="Client-level DP: refuse a smaller privacy.noise_multiplier.")
    max_epsilon: float | None = Field(
        None, gt=0, description="Client-level DP: refuse runs whose privacy.target_epsilon is "
        "unset or larger.")
    require_example_level: bool = Field(
        False, description="Refuse runs without example-level DP-SGD on this institution's rows.")
    min_example_noise_multiplier: float | None = Field(
        None, ge=0, description="Example-level DP: refuse a smaller example_noise_multiplier.")
    max_lifetime_epsilon: float | None = Field(
        None, gt=0, description="Cap on this institution's own client-level epsilon over every "
        "round of every run it sends an update in (its lifetime account, in its own ledger), "
        "counting only the noise it adds itself: refuse a run or round that would pass it. "
        "Needs client-level DP under secure aggregation and a started account.")
    max_lifetime_example_epsilon: float | None = Field(
        None, gt=0, description="The same cap for its example-level (DP-SGD) epsilon.")
    lifetime_delta: float = Field(
        1e-5, gt=0, lt=1, description="The delta at which the lifetime account states epsilon "
        "(the institution's, whatever delta a run asks for).")

    @property
    def needs_privacy(self) -> bool:
        """A noise floor or epsilon cap means nothing without the DP it bounds."""
        return (self.require_privacy or self.min_noise_multiplier is not None
                or self.max_epsilon is not None)

    @property
    def needs_example_level(self) -> bool:
        return self.require_example_level or self.min_example_noise_multiplier is not None

    @property
    def caps_lifetime(self) -> bool:
        """Whether the institution enforces its lifetime account (and so needs one)."""
        return (self.max_lifetime_epsilon is not None
                or self.max_lifetime_example_epsilon is not None)


def load_policy(path: Path) -> InstitutionPolicy:
    """The policy in TOML file `path`; ConfigError names the file and field when it is bad."""
    if not path.is_file():
        raise ConfigError(f"{path}: policy file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    try:
        return InstitutionPolicy.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise ConfigError(f"{path}: {field}: {first['msg']} (got {first.get('input')!r})") from None


def check_run(policy: InstitutionPolicy, cfg: RunConfig,
              model_sha256: Callable[[str], str]) -> None:
    """Return only if `cfg` asks for nothing `policy` forbids; SecurityError names the first
    setting that falls short. `model_sha256(name)` hashes the model folder `name` resolves to
    (called only when the policy pins a hash)."""
    if cfg.model.trust_remote_code:
        raise SecurityError("the run asks for model.trust_remote_code = true: this institution "
                            "never runs code from a model repository")
    _check_model(policy, cfg.model.name, model_sha256)
    if policy.require_sealing and not cfg.security.seal_updates:
        raise SecurityError("the run asks for security.seal_updates = false; this institution's "
                            "policy requires sealed updates (require_sealing)")
    if policy.require_secure_aggregation and not cfg.secure_aggregation.enabled:
        raise SecurityError("the run has secure_aggregation.enabled = false; this institution's "
                            "policy requires masking (require_secure_aggregation)")
    _check_privacy(policy, cfg)
    _check_lifetime(policy, cfg)


def _check_model(policy: InstitutionPolicy, name: str, model_sha256: Callable[[str], str]) -> None:
    if policy.allowed_models is None:
        return
    matches = [model for model in policy.allowed_models if model.name == name]
    if not matches:
        raise SecurityError(f"the run asks for model.name={name!r}, which this institution's "
                            "policy does not allow (allowed_models)")
    pinned = {model.sha256 for model in matches if model.sha256 is not None}
    if len(pinned) < len(matches):
        return  # one entry accepts the name alone
    actual = model_sha256(name)
    if actual not in pinned:
        raise SecurityError(f"model {name!r}: content hash {actual[:16]}... is not the one this "
                            "institution's policy allows (allowed_models.sha256)")


def _check_privacy(policy: InstitutionPolicy, cfg: RunConfig) -> None:
    privacy = cfg.privacy
    if policy.needs_privacy and not privacy.enabled:
        raise SecurityError("the run has privacy.enabled = false; this institution's policy "
                            "requires client-level differential privacy (require_privacy)")
    floor = policy.min_noise_multiplier
    if floor is not None and privacy.noise_multiplier < floor:
        raise SecurityError(f"the run asks for privacy.noise_multiplier="
                            f"{privacy.noise_multiplier}, below this institution's floor "
                            f"min_noise_multiplier={floor}")
    cap = policy.max_epsilon
    if cap is not None and (privacy.target_epsilon is None or privacy.target_epsilon > cap):
        raise SecurityError(f"the run asks for privacy.target_epsilon={privacy.target_epsilon}, "
                            f"this institution's policy allows at most max_epsilon={cap}")
    if policy.needs_example_level and not privacy.example_level:
        raise SecurityError("the run has privacy.example_level = false; this institution's "
                            "policy requires DP-SGD on its rows (require_example_level)")
    floor = policy.min_example_noise_multiplier
    if floor is not None and privacy.example_noise_multiplier < floor:
        raise SecurityError(
            f"the run asks for privacy.example_noise_multiplier="
            f"{privacy.example_noise_multiplier}, below this institution's floor "
            f"min_example_noise_multiplier={floor}")


def _check_lifetime(policy: InstitutionPolicy, cfg: RunConfig) -> None:
    """A capped lifetime account refuses, before anything runs, a run whose rounds it could
    only charge as infinite: one whose noise the coordinator adds (or no noise), or whose
    account could not be signed (unsealed). Each round's finite charge is checked against what
    is left when the round comes (`fedpeft.client.privacy_account`)."""
    if not policy.caps_lifetime:
        return
    if not cfg.security.seal_updates:
        raise SecurityError("the run asks for security.seal_updates = false; this institution's "
                            "lifetime privacy account is kept in its signed ledger, which an "
                            "unsealed run has no key for")
    privacy = cfg.privacy
    if policy.max_lifetime_epsilon is not None:
        if not privacy.enabled or privacy.noise_multiplier == 0:
            raise SecurityError("the run has no client-level noise; this institution's policy "
                                f"caps its lifetime epsilon (max_lifetime_epsilon="
                                f"{policy.max_lifetime_epsilon:g}): not guaranteed locally")
        if not cfg.secure_aggregation.enabled:
            raise SecurityError("the run's client-level noise is added by the coordinator "
                                "(secure_aggregation.enabled = false): not guaranteed locally, "
                                "and this institution's policy caps its lifetime epsilon "
                                f"(max_lifetime_epsilon={policy.max_lifetime_epsilon:g})")
    cap = policy.max_lifetime_example_epsilon
    if cap is not None and (not privacy.example_level or privacy.example_noise_multiplier == 0):
        raise SecurityError("the run has no example-level DP-SGD noise; this institution's "
                            "policy caps its lifetime example-level epsilon "
                            f"(max_lifetime_example_epsilon={cap:g})")
