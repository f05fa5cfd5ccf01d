#!/bin/sh
# `redis-server [options]` runs with protected mode off (later options may turn it back on), as in the
# official image; any other command runs as given.
set -eu
if [ "${1:-}" = redis-server ]; then
  shift
  set -- redis-server --protected-mode no "$@"
fi
exec "$@"
