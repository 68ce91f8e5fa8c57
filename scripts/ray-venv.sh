#!/usr/bin/env bash
# Installs ray[serve] (RAY_VERSION, default 2.60.0) into target/ray-venv once; prints the
# interpreter's path. Used by scripts/ray-compat-check.sh, the recorder of Ray's answers
# (scripts/record-ray-python.py) and the test of Python apps in an environment that has Ray.
set -euo pipefail
cd "$(dirname "$0")/.."
RAY_VERSION=${RAY_VERSION:-2.60.0}
venv=target/ray-venv
if ! "$venv/bin/python" -c "import ray, sys; sys.exit(ray.__version__ != '$RAY_VERSION')" 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q "ray[serve]==$RAY_VERSION" >&2
fi
echo "$PWD/$venv/bin/python"
