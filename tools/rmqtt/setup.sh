#!/usr/bin/env bash
# Provisions the rmqtt broker that TestCluster runs as a three-node cluster:
# rmqttd built from crates.io at the version in VERSION, with only the
# plugins a cluster of smartybridge needs (acl, counter, retainer,
# shared-subscription, sys-topic, cluster-raft, cluster-broadcast).
#
#   tools/rmqtt/setup.sh     build it, or reuse it, and print the binary
#
# It lives outside the work tree, in $SMARTY_RMQTT_CACHE (default
# /var/cache/smartybridge/rmqtt), and is reused while VERSION and the
# recipe's revision below are unchanged. Needs cargo (rustup), crates.io, and Debian's
# protobuf-compiler (installed when missing, as root). A cold build takes
# about 15 minutes on two cores; a warm one returns at once.
#
# Why trimmed: rmqttd's published crate depends on every plugin (Kafka
# through cmake, Pulsar, NATS, Redis) and on protobuf-src, which compiles
# protobuf's C++ from source. The Cargo.toml written here keeps the plugins
# above, and protobuf-src is replaced by a stub that points at the Debian
# protoc (rmqtt's raft crates only need the protoc binary).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${SMARTY_RMQTT_CACHE:-/var/cache/smartybridge/rmqtt}
version=$(tr -d '[:space:]' <"$here/VERSION")
# The crate's checksum in the crates.io index (cksum of rmqttd 0.24.0).
sha256=2e43d70b225e0386ed91c556d394db05b141d53bc7b9c429caa1f9fa772467bc
# Bumped when the build below changes (not for comments): a new binary.
recipe=1
bin=$cache/rmqttd-$version-r$recipe
# The tests run $cache/rmqttd (internal/testenv.RMQTTBinary).
if [ -x "$bin" ]; then
	ln -sfn "$(basename "$bin")" "$cache/rmqttd"
	echo "$bin"
	exit 0
fi

log() { echo "rmqtt setup: $*" >&2; }
command -v cargo >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/cargo" ] || {
	log "cargo not found: install Rust with rustup first"
	exit 1
}
export PATH=$PATH:$HOME/.cargo/bin
if ! command -v protoc >/dev/null 2>&1; then
	log "installing protobuf-compiler"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends protobuf-compiler >/dev/null
fi
protoc=$(command -v protoc)

build=$cache/build-$version-r$recipe
rm -rf "$build"
mkdir -p "$build/protobuf-src/src"

# The published rmqttd source (server.rs, build.rs, Cargo.lock): the crate
# file from crates.io, checked against the checksum its index gives.
log "fetching rmqttd $version"
curl -sSfL --retry 3 -o "$build/rmqttd.crate" "https://static.crates.io/crates/rmqttd/rmqttd-$version.crate"
echo "$sha256  $build/rmqttd.crate" | sha256sum -c --quiet - || {
	log "rmqttd-$version.crate does not match its checksum"
	exit 1
}
tar -xzf "$build/rmqttd.crate" -C "$build"
mv "$build/rmqttd-$version" "$build/rmqttd"

cat >"$build/protobuf-src/Cargo.toml" <<'TOML'
[package]
name = "protobuf-src"
version = "1.1.0+21.5"
edition = "2021"
TOML
cat >"$build/protobuf-src/src/lib.rs" <<RUST
//! Stands in for protobuf-src: the Debian protoc instead of a C++ build.
pub fn protoc() -> std::path::PathBuf {
    std::path::PathBuf::from("$protoc")
}
RUST

v=$version
cat >"$build/rmqttd/Cargo.toml" <<TOML
[package]
edition = "2021"
name = "rmqttd"
version = "$v"
build = "build.rs"

[package.metadata.plugins.rmqtt-acl]
default_startup = true
[package.metadata.plugins.rmqtt-retainer]
[package.metadata.plugins.rmqtt-counter]
default_startup = true
[package.metadata.plugins.rmqtt-shared-subscription]
[package.metadata.plugins.rmqtt-sys-topic]
[package.metadata.plugins.rmqtt-cluster-raft]
immutable = true
[package.metadata.plugins.rmqtt-cluster-broadcast]
immutable = true

[[bin]]
name = "rmqttd"
path = "src/server.rs"

[dependencies]
anyhow = "1.0.99"
chrono = { version = "0.4", default-features = false, features = ["clock"] }
clap = { version = "4", features = ["derive"] }
log = "0.4"
rmqtt = { version = "=$v", features = ["full"] }
rmqtt-acl = "=$v"
rmqtt-cluster-broadcast = "=$v"
rmqtt-cluster-raft = "=$v"
rmqtt-conf = "0.5.0"
rmqtt-counter = "=$v"
rmqtt-net = "0.5.0"
rmqtt-retainer = { version = "=$v", features = ["ram"] }
rmqtt-shared-subscription = "=$v"
rmqtt-sys-topic = "=$v"
time = { version = "0.3", features = ["local-offset"] }
tokio = { version = "1", default-features = false, features = ["macros", "rt-multi-thread", "signal"] }
tracing = "0.1"
tracing-appender = "0.2"
tracing-subscriber = { version = "0.3", features = ["env-filter"] }

[build-dependencies]
toml = "0.9"

[target.'cfg(target_os = "linux")'.dependencies]
tikv-jemallocator = "0.6"

[patch.crates-io]
protobuf-src = { path = "../protobuf-src" }

[profile.release]
debug = false
TOML

log "building rmqttd $version (trimmed) in $build; log in $build/cargo.log"
start=$(date +%s)
(cd "$build/rmqttd" && cargo build --release -j "${SMARTY_RMQTT_JOBS:-$(nproc)}" >"$build/cargo.log" 2>&1) || {
	tail -30 "$build/cargo.log" >&2
	exit 1
}
log "built in $(($(date +%s) - start)) s"
cp "$build/rmqttd/target/release/rmqttd" "$bin.new"
mv "$bin.new" "$bin"
ln -sfn "$(basename "$bin")" "$cache/rmqttd"
rm -rf "$build"
echo "$bin"
