#!/usr/bin/env bash
# Mutation testing of the security core with mutmut (config: [tool.mutmut] in pyproject.toml),
# one module at a time, at low priority: it is slow (about 5,000 mutants), so it is not part of
# `make test`. Results stay in mutants/ (`mutmut results`, `mutmut show NAME`); the table per
# module is printed at the end (bench/mutation_summary.py).
#   scripts/mutation.sh [VENV] [MODULE-GLOB ...]   e.g. scripts/mutation.sh .venv 'fedpeft.common.audit.*'
set -euo pipefail
VENV="${1:-.venv}"
shift || true
MODULES=("$@")
if [ ${#MODULES[@]} -eq 0 ]; then
  MODULES=(
    'fedpeft.common.audit.*'
    'fedpeft.common.privacy.*'
    'fedpeft.common.wire.envelopes.*'
    'fedpeft.client.stages.*'
    'fedpeft.common.crypto.signing.*' 'fedpeft.common.crypto.seal.*'
    'fedpeft.common.crypto.envelope.*' 'fedpeft.common.crypto.keys.*'
    'fedpeft.server.strategies.sealed.*'
    'fedpeft.server.strategies.private.*'
    'fedpeft.server.strategies.secure_aggregation.*'
    'fedpeft.common.crypto.secagg.*'
    'fedpeft.common.crypto.certs.*'
  )
fi
if ! "$VENV/bin/python" -c "import mutmut" 2>/dev/null; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[mutation]"
fi
# mutmut puts mutants/src first on sys.path itself; an inherited PYTHONPATH would shadow it.
unset PYTHONPATH
export OMP_NUM_THREADS=1 PATH="$VENV/bin:$PATH"
LOG="$(mktemp)"
for module in "${MODULES[@]}"; do
  echo "mutation: $module"
  nice -n 10 mutmut run --max-children "${MUTATION_JOBS:-2}" "$module" >"$LOG" 2>&1 \
    || { tail -c 2000 "$LOG"; echo "mutation: mutmut failed on $module" >&2; }
done
rm -f "$LOG"
"$VENV/bin/python" bench/mutation_summary.py \
  --group src/fedpeft/common/crypto/secagg/ --group src/fedpeft/common/crypto/ \
  --group src/fedpeft/common/privacy/ --group src/fedpeft/common/audit/ \
  --group src/fedpeft/client/stages/
