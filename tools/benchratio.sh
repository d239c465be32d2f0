#!/usr/bin/env bash
# Measures frame→telegram decoding as a multiple of the floor (a bare
# AES-GCM open of the same frame), alternating the two benchmarks so that
# a noisy machine affects both alike. Usage: bash tools/benchratio.sh [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-6}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go test -c -o "$tmp/decrypt.test" ./decrypt
go test -c -o "$tmp/bridge.test" ./bridge
for _ in $(seq "$rounds"); do
	floor=$(cd decrypt && "$tmp/decrypt.test" -test.run XXX -test.bench 'AEADOpenFloor' -test.benchtime 1s | awk '/^Benchmark/ {print $3}')
	decode=$(cd bridge && "$tmp/bridge.test" -test.run XXX -test.bench 'BenchmarkDecode$' -test.benchtime 1s | awk '/^Benchmark/ {print $3}')
	awk -v f="$floor" -v d="$decode" 'BEGIN { printf "floor %6.0f ns  decode %6.0f ns  ratio %.1f\n", f, d, d / f }'
done
