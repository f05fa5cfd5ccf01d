#!/bin/sh
# prometheus [flags]: with the official image's storage default (data/ in the working directory,
# /prometheus) unless the flags name a storage path; Debian's build would use /var/lib/prometheus.
set -eu
for arg in "$@"; do
  case "$arg" in
    --storage.tsdb.path=* | --storage.tsdb.path) exec /usr/bin/prometheus "$@" ;;
  esac
done
exec /usr/bin/prometheus --storage.tsdb.path=data/ "$@"
