#!/usr/bin/env bash
# The system install, for a Grafana installed from its deb/rpm package (README: "Grafana
# installed as a service"). From a checkout where `make setup` has run, as root:
#
#   sudo deploy/install.sh            (or: sudo make install)
#
# Idempotent: run it again after a `git pull` to upgrade. It makes
#   - a system user for the pipeline, in Grafana's group;
#   - the run folder (ipc sockets), group Grafana's, where a sandboxed Grafana can see it
#     (its service has a private /tmp and no /home or /root);
#   - a venv from a system Python with zmqstream installed (not editable), outside /home and /root;
#   - the plugin folder in Grafana's plugins folder, its python.path pointing into that venv;
#   - supervisord's conf and a systemd unit running the pipeline as that user, started if
#     systemd runs here;
# and prints the grafana.ini lines to paste. Every path can be moved with a variable:
ZS_PREFIX=${ZMQSTREAM_INSTALL_PREFIX:-/opt/zmqstream}           # the venv: $ZS_PREFIX/venv
ZS_RUN_DIR=${ZMQSTREAM_INSTALL_RUN_DIR:-/run/zmqstream}         # the ipc sockets
ZS_DATA_DIR=${ZMQSTREAM_INSTALL_DATA_DIR:-/var/lib/zmqstream}   # the recorder's segments
ZS_LOG_DIR=${ZMQSTREAM_INSTALL_LOG_DIR:-/var/log/zmqstream}     # each program's JSON log lines
ZS_PLUGINS_DIR=${ZMQSTREAM_INSTALL_PLUGINS_DIR:-/var/lib/grafana/plugins}
ZS_CONF_DIR=${ZMQSTREAM_INSTALL_CONF_DIR:-/etc/zmqstream}
ZS_UNIT_DIR=${ZMQSTREAM_INSTALL_UNIT_DIR:-/etc/systemd/system}
ZS_USER=${ZMQSTREAM_INSTALL_USER:-zmqstream}
ZS_GROUP=${ZMQSTREAM_INSTALL_GROUP:-grafana}                    # the group Grafana's service runs as
ZS_PYTHON=${ZMQSTREAM_INSTALL_PYTHON:-/usr/bin/python3}
ZS_WORKERS=${ZMQSTREAM_INSTALL_WORKERS:-$(nproc)}
ZS_START=${ZMQSTREAM_INSTALL_START:-1}                          # 0: install only, start nothing
set -euo pipefail
umask 022  # what it installs is read by Grafana's user and the pipeline's, whatever root's umask
checkout=$(cd "$(dirname "$0")/.." && pwd)
plugin_id=zmqstream-stream-datasource

say() { printf 'zmqstream install: %s\n' "$*"; }
die() { printf 'zmqstream install: %s\n' "$*" >&2; exit 1; }
outside_homes() {  # $1: what, $2: path
  case "$2/" in
    /home/* | /root/* | /run/user/*)
      die "$1 $2 is under a home folder: a packaged Grafana cannot see it (ProtectHome) and its user may not enter it. Choose a folder elsewhere." ;;
  esac
}

# --- everything checked before anything changes -----------------------------------------
[ "$(id -u)" = 0 ] || die "run it as root (sudo $0): it creates the user $ZS_USER and writes $ZS_PREFIX, $ZS_CONF_DIR and $ZS_RUN_DIR"
python=$(readlink -f "$ZS_PYTHON" 2>/dev/null) && [ -x "$python" ] ||
  die "no Python at $ZS_PYTHON: install one (apt-get install python3 python3-venv) or set ZMQSTREAM_INSTALL_PYTHON"
case "$python/" in
  /home/* | /root/*)
    die "Python $ZS_PYTHON is $python, under a home folder (pyenv's?): Grafana's user cannot execute it and ProtectHome hides it from a packaged Grafana's plugins. Use a system Python (apt-get install python3 python3-venv), or set ZMQSTREAM_INSTALL_PYTHON to one outside /home and /root" ;;
esac
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  die "Python $python is older than 3.11: install python3.11 or later, or set ZMQSTREAM_INSTALL_PYTHON"
"$python" -c 'import ensurepip, venv' 2>/dev/null ||
  die "Python $python cannot make a venv: apt-get install python3-venv (or your distribution's equivalent)"
getent group "$ZS_GROUP" >/dev/null ||
  die "there is no group $ZS_GROUP: install Grafana first (its package makes the grafana user and group), or set ZMQSTREAM_INSTALL_GROUP to the group Grafana's service runs as"
[ -f "$checkout/services/plugin/_proto/pluginv2_pb2.py" ] ||
  die "the gRPC stubs are missing in $checkout: run make setup there first"
[ -f "$checkout/frontend/dist/module.js" ] ||
  die "frontend/dist/module.js is missing in $checkout: run make setup there first"
outside_homes "the install folder" "$ZS_PREFIX"
outside_homes "Grafana's plugins folder" "$ZS_PLUGINS_DIR"
outside_homes "the run folder" "$ZS_RUN_DIR"
case "$ZS_RUN_DIR/" in
  /tmp/* | /var/tmp/*) die "the run folder $ZS_RUN_DIR is in a temporary folder, which Grafana's service has a private copy of (PrivateTmp): use one under /run" ;;
esac
[[ "$ZS_WORKERS" =~ ^[1-9][0-9]*$ ]] || die "ZMQSTREAM_INSTALL_WORKERS must be a positive number, got $ZS_WORKERS"

# --- the pipeline's user, in Grafana's group ----------------------------------------------
if id "$ZS_USER" >/dev/null 2>&1; then
  say "user $ZS_USER exists"
else
  useradd --system --user-group --home-dir "$ZS_DATA_DIR" --no-create-home --shell /usr/sbin/nologin "$ZS_USER"
  say "created system user $ZS_USER"
fi
case " $(id -nG "$ZS_USER") " in
  *" $ZS_GROUP "*) ;;
  *) usermod --append --groups "$ZS_GROUP" "$ZS_USER"
     say "added $ZS_USER to group $ZS_GROUP" ;;
esac

# --- folders ------------------------------------------------------------------------------
install -d -m 0755 "$ZS_PREFIX" "$ZS_CONF_DIR" "$ZS_PLUGINS_DIR"
install -m 0644 "$checkout/README.md" "$ZS_PREFIX/README.md"  # the unit's Documentation=
install -d -o "$ZS_USER" -g "$ZS_GROUP" -m 0770 "$ZS_RUN_DIR"
install -d -o "$ZS_USER" -g "$ZS_USER" -m 0700 "$ZS_DATA_DIR"
install -d -o "$ZS_USER" -g "$ZS_USER" -m 0750 "$ZS_LOG_DIR"

# --- the venv, from the system Python, zmqstream installed into it ----------------------
venv=$ZS_PREFIX/venv
if [ "$(readlink -f "$venv/bin/python" 2>/dev/null)" != "$python" ]; then
  "$python" -m venv --clear "$venv"
  say "made $venv from $python"
fi
# from a copy, as the image does: a build in the checkout would leave root's files in it
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -r "$checkout/pyproject.toml" "$checkout/README.md" "$checkout/services" "$stage/"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$stage" ||
  die "pip could not install zmqstream into $venv (above: why); the plugin folder and the service were left as they were"
say "installed zmqstream into $venv"

# --- the plugin folder Grafana loads, running the venv's Python ---------------------------
(cd "$checkout" && "$venv/bin/python" -m services.packaging.bundle --out "$ZS_PLUGINS_DIR" >/dev/null)
say "plugin folder $ZS_PLUGINS_DIR/$plugin_id (python.path: $venv/bin/python)"

# --- supervisord's conf and the systemd unit ----------------------------------------------
runtime_dir=${ZS_RUN_DIR#/run/}
state_dir=${ZS_DATA_DIR#/var/lib/}
logs_dir=${ZS_LOG_DIR#/var/log/}
fill() {
  sed -e "s|@PREFIX@|$ZS_PREFIX|g" -e "s|@VENV@|$venv|g" -e "s|@RUN_DIR@|$ZS_RUN_DIR|g" \
    -e "s|@DATA_DIR@|$ZS_DATA_DIR|g" -e "s|@LOG_DIR@|$ZS_LOG_DIR|g" -e "s|@CONF_DIR@|$ZS_CONF_DIR|g" -e "s|@USER@|$ZS_USER|g" \
    -e "s|@GROUP@|$ZS_GROUP|g" -e "s|@WORKERS@|$ZS_WORKERS|g" \
    -e "s|@RUNTIME_DIRECTORY@|$runtime_dir|g" -e "s|@STATE_DIRECTORY@|$state_dir|g" \
    -e "s|@LOGS_DIRECTORY@|$logs_dir|g" "$1"
}
fill "$checkout/deploy/systemd/supervisord.conf" >"$ZS_CONF_DIR/supervisord.conf"
install -d -m 0755 "$ZS_UNIT_DIR"
fill "$checkout/deploy/systemd/zmqstream.service" >"$ZS_UNIT_DIR/zmqstream.service"
say "wrote $ZS_CONF_DIR/supervisord.conf and $ZS_UNIT_DIR/zmqstream.service"
[[ "$runtime_dir" == */* || "$runtime_dir" == "$ZS_RUN_DIR" ]] &&
  say "note: $ZS_RUN_DIR is not directly under /run, so the unit's RuntimeDirectory= does not make it at boot: make it yourself (owner $ZS_USER, group $ZS_GROUP, mode 0770)"

# --- started, if systemd runs here --------------------------------------------------------
ctl="runuser -u $ZS_USER -- $venv/bin/supervisorctl -c $ZS_CONF_DIR/supervisord.conf"
if [ "$ZS_START" != 1 ]; then
  say "not started (ZMQSTREAM_INSTALL_START=$ZS_START)"
elif [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  systemctl daemon-reload
  systemctl enable --quiet zmqstream.service
  systemctl restart zmqstream.service
  say "started: systemctl status zmqstream; logs: journalctl -u zmqstream"
else
  say "systemd is not running here, so nothing was started. Start the pipeline with:"
  say "  runuser -u $ZS_USER -- $venv/bin/supervisord -c $ZS_CONF_DIR/supervisord.conf"
fi

cat <<EOF

Paste into /etc/grafana/grafana.ini (then: systemctl restart grafana-server):

[plugins]
allow_loading_unsigned_plugins = $plugin_id
EOF
[ "$ZS_PLUGINS_DIR" = /var/lib/grafana/plugins ] || printf '\n[paths]\nplugins = %s\n' "$ZS_PLUGINS_DIR"
cat <<EOF

[plugin.$plugin_id]
run_dir = $ZS_RUN_DIR
socket_group = $ZS_GROUP

Check: runuser -u $ZS_USER -- $venv/bin/zmqstream status --run-dir $ZS_RUN_DIR --socket-group $ZS_GROUP
       $ctl status
EOF
