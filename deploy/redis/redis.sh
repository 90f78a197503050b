#!/bin/sh
# A Redis data node of the Sentinel layout (deploy/compose.ha.yaml, and the prod Kubernetes overlay
# through this folder's ConfigMap), run by the redis image's shell: sh redis.sh.
# It starts as the replica of the master the Sentinels name, and follows REDIS_PRIMARY (the
# layout's first-start primary) only when no Sentinel answers: the first start, or every Sentinel
# down at once. Asking first matters: a primary that comes back as a primary after a failover takes
# writes that the Sentinels' conversion of it into a replica then wipes (the multi-host harness
# saw it happen), and a promoted replica restarted with a fixed --replicaof would demote the master.
#   REDIS_ANNOUNCE       the name others reach this node by (replica-announce-ip: the Sentinels
#                        hand it to every client, so it must resolve for them)
#   REDIS_PORT (6379)
#   REDIS_PRIMARY        host:port of the first-start primary
#   REDIS_SENTINELS, REDIS_SENTINEL_MASTER, REDIS_SENTINEL_PASSWORD   as the clients have them
#   REDIS_PASSWORD       requirepass, and masterauth for when it is (or becomes) a replica
#   REDIS_DIR (/data)    the AOF's folder
set -eu
port="${REDIS_PORT:-6379}"
self="${REDIS_ANNOUNCE:?name this node}:$port"

# "host port" as each Sentinel that answers names the master, one a line; the most named wins: a
# Sentinel that has not yet heard of a failover still names the old primary, and starting on its
# word made a restarted old primary a primary again (tests/unit/deploy/test_redis.py saw it).
if [ -n "${REDIS_SENTINEL_PASSWORD:-}" ]; then export REDISCLI_AUTH="$REDIS_SENTINEL_PASSWORD"; fi
master=$(
  for sentinel in $(printf %s "${REDIS_SENTINELS:?}" | tr , ' '); do
    timeout 2 redis-cli -h "${sentinel%:*}" -p "${sentinel##*:}" --raw \
      SENTINEL get-master-addr-by-name "${REDIS_SENTINEL_MASTER:?}" 2>/dev/null | paste -sd ' ' || true
  done | grep -E '^[^ ]+ [0-9]+$' | sort | uniq -c | sort -rn | head -n 1 | sed 's/^ *[0-9]* //; s/ /:/'
)
unset REDISCLI_AUTH
master="${master:-${REDIS_PRIMARY:?}}"

# A replica that (re)connects is synced at once, not after the 5 s default wait for others to
# share a diskless sync: async jobs are refused until a replica is back (deploy/bin/redis).
set -- --port "$port" --dir "${REDIS_DIR:-/data}" --appendonly yes --replica-announce-ip "$REDIS_ANNOUNCE" \
  --repl-diskless-sync-delay 0
if [ "$master" = "$self" ]; then
  echo "redis.sh: $self starts as the primary" >&2
else
  echo "redis.sh: $self starts as a replica of $master" >&2
  set -- "$@" --replicaof "${master%:*}" "${master##*:}"
fi
if [ -n "${REDIS_PASSWORD:-}" ]; then
  set -- "$@" --requirepass "$REDIS_PASSWORD" --masterauth "$REDIS_PASSWORD"
fi
# Through the image's entrypoint, as its own CMD runs: it hands /data to the redis user and drops
# root. (Outside the image, as in tests/unit/deploy, there is none and redis-server runs directly.)
exec $(command -v docker-entrypoint.sh || true) redis-server "$@"
