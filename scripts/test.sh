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
  case " ${first[*]} " in *" $entry "*) continue ;; esac
  [ "${entry##*/}" = __pycache__ ] || rest+=("$entry")
done
.venv/bin/python -m pytest -q "$@" "${first[@]}"
code=$?
.venv/bin/python -m pytest -q "$@" "${rest[@]}"
status=$?
[ "$code" = 0 ] && code=$status
exit "$code"
