"""A deployed institution handles every message in a fresh ClientApp process (Flower 1.39), so
what the app imports is paid per message: the secure-aggregation stages must not load the
training stack (torch, transformers, pandas: seconds per message on a loaded machine)."""

from __future__ import annotations

import subprocess
import sys


def test_the_client_app_and_its_secure_aggregation_handlers_load_no_training_stack() -> None:
    probe = (
        "import sys\n"
        "import fedpeft.client.app\n"
        "import fedpeft.client.stages.masking\n"
        "print(sorted(m for m in ('torch', 'transformers', 'pandas', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
