#!/bin/sh
# Runs COMMAND against a two-node Ray cluster (a head and a second node, one CPU each, small
# object stores) inside a network namespace of its own, where loopback is the only interface:
# Ray binds some servers to every interface, and here that means 127.0.0.1 alone. The cluster
# is stopped when COMMAND ends, fails or is interrupted.
#
#   unshare -n sh tests/python/ray_cluster.sh VENV PORT COMMAND...
set -e
venv=$1
port=$2
shift 2
ip link set lo up
trap '"$venv/bin/ray" stop --force >/dev/null 2>&1' EXIT INT TERM
node="--node-ip-address 127.0.0.1 --num-cpus 1 --object-store-memory 100000000 --disable-usage-stats"
# shellcheck disable=SC2086
"$venv/bin/ray" start --head --port "$port" --include-dashboard false $node >/dev/null 2>&1
# shellcheck disable=SC2086
"$venv/bin/ray" start --address "127.0.0.1:$port" $node >/dev/null 2>&1
"$@"
