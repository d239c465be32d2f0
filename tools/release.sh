#!/usr/bin/env bash
# Builds the release binaries of smartybridge for every platform its users
# run, reproducibly (-trimpath, no build id, version and commit stamped
# from the tag, cgo off), and writes SHA256SUMS next to them.
#
#   tools/release.sh v0.2.0              build dist/ for the tag v0.2.0
#   tools/release.sh --dry-run           the same for the version in
#                                        addon/config.yaml, into a temp dir,
#                                        and check the result (CI runs this)
#
# The tag, addon/config.yaml's version and main.go's version must agree.
set -euo pipefail
cd "$(dirname "$0")/.."

dry=false
if [ "${1:-}" = "--dry-run" ]; then
	dry=true
	shift
fi
addon_version=$(sed -n 's/^version: *"\([^"]*\)"$/\1/p' addon/config.yaml)
main_version=$(sed -n 's/^[[:space:]]*version = "\([^"]*\)"$/\1/p' main.go)
tag=${1:-v$addon_version}
if [[ ! $tag =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
	echo "release: the tag must look like v1.2.3, not $tag" >&2
	exit 2
fi
version=${tag#v}
if [ "$version" != "$addon_version" ] || [ "$version" != "$main_version" ]; then
	echo "release: tag $tag, but addon/config.yaml says $addon_version and main.go says $main_version; make them agree first (RELEASING.md)" >&2
	exit 1
fi
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
# The add-on's changelog has the release's section; a real release has no
# "Unreleased" section left, so that DOCS.md never describes features the
# released version lacks.
if ! grep -q "^## $version\$" addon/CHANGELOG.md; then
	echo "release: addon/CHANGELOG.md has no section \"## $version\"" >&2
	exit 1
fi
if ! $dry && grep -q "^## Unreleased" addon/CHANGELOG.md; then
	echo "release: addon/CHANGELOG.md still has an Unreleased section: rename it to ## $version (RELEASING.md)" >&2
	exit 1
fi

if $dry; then
	out=$(mktemp -d)
	trap 'rm -rf "$out"' EXIT
else
	out=dist
	rm -rf "$out"
	mkdir -p "$out"
fi

# os/arch[/arm version]: Raspberry Pi 3, 4, 5 (arm64 or armv7), Pi Zero
# and Pi 1 (armv6), PCs, Windows on Intel and ARM, Intel and Apple Macs.
targets="linux/amd64 linux/arm64 linux/arm/7 linux/arm/6 windows/amd64 windows/arm64 darwin/amd64 darwin/arm64"

build() { # build OS ARCH ARM OUTPUT
	GOOS=$1 GOARCH=$2 GOARM=$3 CGO_ENABLED=0 go build -trimpath -buildvcs=false \
		-ldflags "-s -w -buildid= -X main.version=$version -X main.commit=$commit" -o "$4" .
}

for t in $targets; do
	IFS=/ read -r os arch arm <<<"$t"
	name="smartybridge_${version}_${os}_${arch}${arm:+v$arm}"
	[ "$os" = windows ] && name="$name.exe"
	echo "release: $name"
	build "$os" "$arch" "${arm:-}" "$out/$name"
done
(cd "$out" && sha256sum smartybridge_* >SHA256SUMS)

if $dry; then
	n=$(wc -l <"$out/SHA256SUMS")
	if [ "$n" -ne 8 ]; then
		echo "release: $n binaries, want 8" >&2
		exit 1
	fi
	# Reproducible: the same sources give the same bytes.
	build linux amd64 "" "$out/again"
	first=$(sha256sum <"$out/smartybridge_${version}_linux_amd64" | cut -d' ' -f1)
	again=$(sha256sum <"$out/again" | cut -d' ' -f1)
	if [ "$first" != "$again" ]; then
		echo "release: two builds of linux/amd64 differ" >&2
		exit 1
	fi
	# Stamped: the binary says which release and commit it is.
	if [ "$(go env GOOS)/$(go env GOARCH)" = linux/amd64 ]; then
		line=$("$out/smartybridge_${version}_linux_amd64" version)
		case $line in
		"smartybridge $version (commit $commit,"*) ;;
		*)
			echo "release: the binary says '$line'" >&2
			exit 1
			;;
		esac
	fi
	echo "release: dry run OK: 8 binaries, SHA256SUMS, reproducible, stamped $version $commit"
else
	echo "release: dist/ holds the binaries and SHA256SUMS for $tag"
fi
