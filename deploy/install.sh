#!/bin/sh
# Container-less install of tetragon-py on a systemd host, from a checkout of this repository:
#   sudo deploy/install.sh            (then: systemctl status tetragon)
# The package (with its BPF objects, built against this host's kernel BTF) goes into a virtualenv under
# $PREFIX/lib/tetragon-py; tetragon and tetra are linked into $PREFIX/bin; the systemd unit and a
# configuration drop-in go under /etc. DESTDIR stages everything under another root (packaging, tests);
# NO_START=1 leaves the service alone. Needs Python 3.11 and the Makefile's APT_PKGS (clang-19, ...).
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
VENV="$PREFIX/lib/tetragon-py"
PIP_ARGS=${PIP_ARGS:-}

echo "installing tetragon-py from $SRC into $DESTDIR$VENV"
"$PYTHON" -m venv "$DESTDIR$VENV"
# shellcheck disable=SC2086  # PIP_ARGS is a list of options
"$DESTDIR$VENV/bin/pip" install -q $PIP_ARGS "$SRC"

mkdir -p "$DESTDIR$PREFIX/bin"
for cmd in tetragon tetra tetragon-oci-hook; do
	ln -sf "$VENV/bin/$cmd" "$DESTDIR$PREFIX/bin/$cmd"
done

mkdir -p "$DESTDIR/etc/systemd/system" "$DESTDIR/etc/tetragon/tetragon.conf.d" \
	"$DESTDIR/etc/tetragon/tetragon.tp.d" "$DESTDIR/var/log/tetragon"
sed "s|^ExecStart=/usr/local/bin/tetragon|ExecStart=$PREFIX/bin/tetragon|" \
	"$SRC/deploy/systemd/tetragon.service" >"$DESTDIR/etc/systemd/system/tetragon.service"
# the JSON export file of Tetragon's packages; an existing setting is kept
dropin="$DESTDIR/etc/tetragon/tetragon.conf.d/export-filename"
[ -e "$dropin" ] || echo /var/log/tetragon/tetragon.log >"$dropin"

if [ -z "$DESTDIR" ] && [ "${NO_START:-0}" != 1 ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload
	systemctl enable --now tetragon.service
fi
echo "done: $PREFIX/bin/tetragon, unit tetragon.service"
