#!/bin/sh
# The Python half of the image (deploy/Dockerfile runs it; tests/test_image.py runs it on a
# fresh clone, so it cannot break where Docker is missing). From a checkout's root:
#   sh deploy/build-plugin.sh VENV PLUGINS_FOLDER [--backend-only]
# The gRPC stubs are generated into the source tree *before* the package is installed (not
# editable), so the installed copy has them: Grafana execs the plugin from its own working
# directory, where only the installed copy is importable.
set -eu
venv=$1
plugins=$2
shift 2
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --no-cache-dir grpcio-tools
"$venv/bin/python" -m services.packaging.codegen
"$venv/bin/pip" install --quiet --no-cache-dir .
"$venv/bin/python" -m services.packaging.bundle --out "$plugins" "$@"
