#!/usr/bin/env bash
# The test suite (the README's test command runs this): one pytest process over tests/; extra arguments go to
# pytest. Exit: pytest's status (5 = nothing collected).
# It ran in two processes for a while: one process died with SIGSEGV and no traceback late in the suite. The
# cause was OpenVINO Cores dropped in the order they were made, leaving the main thread on an unmapped alternate
# signal stack (the next Python-handled signal, a child's SIGCHLD under torch's DataLoader handler, killed it);
# stages/openvino_runtime.core() keeps one Core per process since.
set -uo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest -q "$@" tests
