"""`fedpeft config show` refuses every setting a run would refuse, before anything runs.

Each case used to pass `config show` and be refused only later: when a Learner was built
(lora options, DP-SGD), when the simulation planned its rounds (secure-aggregation threshold,
adaptive clipping, privacy budget) or by the protocol's own, different headroom rule.
"""

from __future__ import annotations

import sys

import pytest

from fedpeft.cli.main import main

REFUSED = {
    "ffa option fixing the rank": (["peft.options.r=4", "lora.mode=ffa"],
                                   "peft.options.r: lora.mode='ffa'"),
    "stacking on a quantized base": (["lora.mode=stacking", "model.quantization=4bit",
                                      "model.device=cuda"],
                                     "model.quantization='4bit': lora.mode='stacking'"),
    "non-LoRA init under ffa": (['peft.options.init_lora_weights="pissa"', "lora.mode=ffa"],
                                "init_lora_weights='pissa'"),
    "DP-SGD under fp16": (["privacy.example_level=true", "model.precision=fp16"],
                          "model.precision='fp16': privacy.example_level"),
    "DP-SGD with checkpointing": (["privacy.example_level=true",
                                   "model.gradient_checkpointing=true"],
                                  "model.gradient_checkpointing=true: privacy.example_level"),
    "budget spent by round one": (["privacy.enabled=true", "privacy.target_epsilon=0.01"],
                                  "privacy.target_epsilon=0.01 is exceeded by the first round"),
    "too many dropouts for the round": (["secure_aggregation.enabled=true",
                                         "secure_aggregation.max_dropouts=3"],
                                        "secure_aggregation.max_dropouts=3 is too many for 5"),
    "masking a two-institution round with a dropout": (
        ["secure_aggregation.enabled=true", "simulation.num_clients=2"],
        "secure_aggregation.max_dropouts=1 is too many for 2"),
    "adaptive clipping noise too small for the count": (
        ["privacy.enabled=true", "privacy.clipping=adaptive", "privacy.noise_multiplier=4",
         "privacy.clipped_count_stddev=0.5"], "privacy.clipped_count_stddev above 2"),
    "ring without headroom (protocol rule)": (["secure_aggregation.enabled=true",
                                               "secure_aggregation.quantization_bits=30"],
                                              "secure_aggregation.ring_bits=48 leaves 18 bits"),
}


def _config_show(sets: list[str], monkeypatch: pytest.MonkeyPatch,
                 capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    argv = ["fedpeft", "config", "show"] + [item for s in sets for item in ("--set", s)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


@pytest.mark.parametrize("case", list(REFUSED))
def test_config_show_refuses(case: str, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    sets, expected = REFUSED[case]
    code, out, err = _config_show(sets, monkeypatch, capsys)
    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and expected in " ".join(err.split())


def test_config_show_prints_the_round_plan(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _config_show(["secure_aggregation.enabled=true", "privacy.enabled=true",
                                 "simulation.num_clients=6"], monkeypatch, capsys)
    assert code == 0
    plan_line = out.strip().splitlines()[-1]
    assert plan_line.startswith("# round plan of the simulated federation: 6 institutions")
    assert "masking with 5 neighbours, threshold 5" in plan_line
    # sigma * C / sqrt(6 - 1 dropout): each institution's share of the central noise
    assert f"noise std per institution {1.0 / 5 ** 0.5:g}" in plan_line
