#!/usr/bin/env bash
# Provisions the Home Assistant core that TestHomeAssistant runs against: a
# Debian testing root (Python 3.14) made with debootstrap, holding a venv with
# the Home Assistant release and every package pinned in constraints.txt.
#
#   sudo tools/homeassistant/setup.sh          build it, or reuse it, and
#                                              print where it is
#   sudo tools/homeassistant/setup.sh --freeze rebuild, then rewrite
#                                              constraints.txt from what
#                                              pip resolved (to move to a
#                                              new release: edit VERSION)
#
# It lives outside the work tree, in $SMARTY_HA_CACHE (default
# /var/cache/smartybridge/homeassistant), and is reused while VERSION,
# constraints.txt, requirements.py and this script are unchanged. Needs root
# (debootstrap, chroot) and the package registries: Debian's mirror
# ($SMARTY_HA_MIRROR, default http://deb.debian.org/debian) and PyPI, with the
# host's pip settings. Nothing is fetched when the test runs.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${SMARTY_HA_CACHE:-/var/cache/smartybridge/homeassistant}
mirror=${SMARTY_HA_MIRROR:-http://deb.debian.org/debian}
version=$(tr -d '[:space:]' <"$here/VERSION")
freeze=false
case "${1:-}" in
--freeze) freeze=true ;;
"") ;;
*)
	echo "usage: $0 [--freeze]" >&2
	exit 2
	;;
esac

if [ "$(id -u)" -ne 0 ]; then
	echo "setup.sh: needs root for debootstrap and chroot; run it with sudo" >&2
	exit 1
fi

stamp=$(cat "$here/VERSION" "$here/constraints.txt" "$here/requirements.py" "$0" | sha256sum | cut -c1-16)
root=$cache/root
if ! $freeze && [ -f "$cache/stamp" ] && [ "$(cat "$cache/stamp")" = "$stamp" ] && [ -x "$root/opt/ha/bin/hass" ]; then
	echo "$root"
	exit 0
fi

log() { echo "setup.sh: $*" >&2; }
if ! command -v debootstrap >/dev/null 2>&1; then
	log "installing debootstrap"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >&2
fi

mkdir -p "$cache"
build=$cache/root.new
rm -rf "$build"
# Debian testing has the Python (3.14) that Home Assistant 2026.x needs.
log "debootstrap testing into $build"
debootstrap --variant=minbase testing "$build" "$mirror" >"$cache/debootstrap.log" 2>&1 || {
	tail -20 "$cache/debootstrap.log" >&2
	exit 1
}

# The host's name resolution, CA bundle (it may hold a proxy's CA) and pip
# settings, so that apt and pip inside reach the registries as the host does.
cp /etc/resolv.conf "$build/etc/resolv.conf"
mkdir -p "$build/etc/ssl/certs"
cp /etc/ssl/certs/ca-certificates.crt "$build/etc/ssl/certs/host-ca.crt"
cert=$(pip config get global.cert 2>/dev/null || true)
cert=${PIP_CERT:-$cert}
pipenv=(PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT="${PIP_DEFAULT_TIMEOUT:-180}")
for v in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST; do
	[ -n "${!v:-}" ] && pipenv+=("$v=${!v}")
done
for v in global.index-url global.extra-index-url global.trusted-host; do
	if value=$(pip config get "$v" 2>/dev/null); then
		name=PIP_$(echo "${v#global.}" | tr 'a-z-' 'A-Z_')
		pipenv+=("$name=$value")
	fi
done
if [ -n "$cert" ] && [ -f "$cert" ]; then
	cp "$cert" "$build/etc/ssl/certs/host-pip-ca.crt"
	pipenv+=(PIP_CERT=/etc/ssl/certs/host-pip-ca.crt)
fi
inside() { env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "${pipenv[@]}" chroot "$build" "$@"; }

log "python3 and a compiler (two voice packages have no wheel for 3.14)"
# The mirror's Release file for testing may be expired.
echo "deb $mirror testing main" >"$build/etc/apt/sources.list"
apt=(apt-get -o Acquire::Check-Valid-Until=false -o APT::Install-Recommends=false -qq)
inside "${apt[@]}" update >&2
inside env DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y python3 python3-venv python3-dev g++ ca-certificates >/dev/null
# The image's own bundle is regenerated on install; use the host's again.
cp /etc/ssl/certs/ca-certificates.crt "$build/etc/ssl/certs/ca-certificates.crt"

log "homeassistant==$version and its integrations' requirements"
inside python3 -m venv /opt/ha
cp "$here/constraints.txt" "$here/requirements.py" "$build/tmp/"
if $freeze; then
	inside /opt/ha/bin/pip install -q "homeassistant==$version" >&2
	bundled=/opt/ha/lib/python3.14/site-packages/homeassistant/package_constraints.txt
	inside /opt/ha/bin/python /tmp/requirements.py >"$build/tmp/requirements.txt"
	inside /opt/ha/bin/pip install -q --prefer-binary -c "$bundled" -r /tmp/requirements.txt >&2
	{
		echo "# pip freeze of the test Home Assistant $version; written by setup.sh --freeze"
		inside /opt/ha/bin/pip freeze
	} >"$here/constraints.txt"
	stamp=$(cat "$here/VERSION" "$here/constraints.txt" "$here/requirements.py" "$0" | sha256sum | cut -c1-16)
else
	inside /opt/ha/bin/pip install -q --prefer-binary -c /tmp/constraints.txt "homeassistant==$version" >&2
	inside /opt/ha/bin/python /tmp/requirements.py >"$build/tmp/requirements.txt"
	inside /opt/ha/bin/pip install -q --prefer-binary -c /tmp/constraints.txt -r /tmp/requirements.txt >&2
	# Every installed package must be the pinned one; a new requirement
	# that the constraints do not pin means constraints.txt is stale.
	if ! diff <(grep -v '^#' "$here/constraints.txt" | sort -f) <(inside /opt/ha/bin/pip freeze | sort -f) >&2; then
		log "installed packages differ from constraints.txt: run setup.sh --freeze and commit it"
		exit 1
	fi
fi
mkdir -p "$build/config"
inside /opt/ha/bin/python -c 'import homeassistant.const as c; print("Home Assistant", c.__version__)' >&2

rm -rf "$root"
mv "$build" "$root"
echo "$stamp" >"$cache/stamp"
echo "$root"
