#!/usr/bin/env bash
# ci-retry.sh ATTEMPTS COMMAND [ARGS...]
#
# Runs COMMAND up to ATTEMPTS times, waiting RETRY_DELAY seconds (default 10) times the
# attempt number between tries, and exits with the last attempt's status. For the
# network-bound steps of the pipeline (registry pushes, pulls, signatures) whose failures
# are usually a registry or runner hiccup; a deterministic failure still fails, just later.
set -euo pipefail

if [ $# -lt 2 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: ci-retry.sh ATTEMPTS COMMAND [ARGS...]" >&2
  exit 2
fi
attempts="$1"
shift
delay="${RETRY_DELAY:-10}"

for ((i = 1; ; i++)); do
  if "$@"; then
    exit 0
  else
    rc=$?
  fi
  if [ "$i" -ge "$attempts" ]; then
    echo "ci-retry: '$*' failed $i time(s), last exit code $rc" >&2
    exit "$rc"
  fi
  echo "ci-retry: '$*' failed (exit $rc), attempt $i of $attempts; retrying in $((delay * i))s" >&2
  sleep "$((delay * i))"
done
