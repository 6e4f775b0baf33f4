#!/usr/bin/env bash
# The test suite (the README's test command runs this): pytest over tests/, in two processes, first
# tests/finsta_model + tests/pipeline, then everything else; extra arguments go to both.
# Why two: one pytest process running the whole suite died with SIGSEGV after ~1,080 tests (at a different test
# when one was deselected; no Python traceback), while each half passes in its own process: native state that
# accumulates over the suite (OpenVINO/torch/pyarrow/Ray in-process), not yet diagnosed.
# Exit: the first non-zero pytest status (5 = a half collected nothing).
set -uo pipefail
cd "$(dirname "$0")/.."
first=(tests/finsta_model tests/pipeline)
rest=()
for entry in tests/*/ tests/test_*.py; do
  entry=${entry%/}
  [[ " ${first[*]} " == *" $entry "* ]] || rest+=("$entry")
done
code=0
for half in first rest; do
  declare -n paths=$half
  .venv/bin/python -m pytest -q "$@" "${paths[@]}"
  status=$?
  if [ "$code" = 0 ]; then code=$status; fi
done
exit "$code"
