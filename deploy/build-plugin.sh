#!/bin/sh
# The Python half of the image (deploy/Dockerfile runs it; tests/test_image.py runs it on a
# fresh clone, so it cannot break where Docker is missing). From a checkout's root:
#   sh deploy/build-plugin.sh VENV PLUGINS_FOLDER [--backend-only]
# The gRPC stubs are generated into the source tree *before* the package is installed (not
# editable), so the installed copy has them: Grafana execs the plugin from its own working
# directory, where only the installed copy is importable.
set -eu
[ $# -ge 2 ] || { echo "usage: sh deploy/build-plugin.sh VENV PLUGINS_FOLDER [--backend-only]" >&2; exit 2; }
venv=$1
plugins=$2
shift 2
# Every input checked before anything is made: a failure leaves no venv and no half plugin folder.
fail() { echo "deploy/build-plugin.sh: $*" >&2; exit 1; }
[ -f pyproject.toml ] && [ -d services/packaging/protos ] || fail "run it from the checkout's root (no pyproject.toml or services/packaging/protos in $(pwd))"
[ -f deploy/plugin/plugin.json ] || fail "deploy/plugin/plugin.json is missing"
case " $* " in
  *" --backend-only "*) ;;
  *) [ -f frontend/dist/module.js ] || fail "frontend/dist/module.js is missing: build the frontend first (make frontend), or pass --backend-only" ;;
esac
command -v python3 >/dev/null || fail "python3 is missing (apt-get install python3 python3-venv)"
python3 -c 'import ensurepip, venv' 2>/dev/null || fail "python3 cannot make a venv: apt-get install python3-venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --no-cache-dir grpcio-tools
"$venv/bin/python" -m services.packaging.codegen
"$venv/bin/pip" install --quiet --no-cache-dir .
"$venv/bin/python" -m services.packaging.bundle --out "$plugins" "$@"
