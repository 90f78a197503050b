#!/bin/sh
# A Redis Sentinel of the layout (deploy/compose.ha.yaml, the prod Kubernetes overlay), run by the
# redis image's shell: sh sentinel.sh. Its configuration is written anew on every start (Sentinel
# rewrites the file as it runs, so it must be a writable file of its own) and monitors the master
# the other Sentinels name, else the data node that says it is the master (ROLE), else
# REDIS_PRIMARY. Not a file kept from an earlier run: after a failover it names a primary that is
# now a replica, and Sentinels restarted together would all watch it and find no replica to promote.
#   SENTINEL_ANNOUNCE    the name others reach this Sentinel by (clients list it in REDIS_SENTINELS)
#   SENTINEL_PORT (26379)
#   REDIS_SENTINELS      every Sentinel's host:port, as the clients have it (it skips itself)
#   REDIS_SENTINEL_MASTER, REDIS_SENTINEL_PASSWORD (its requirepass; also what peers present)
#   REDIS_NODES          host:port of every data node; REDIS_PRIMARY the first-start primary
#   REDIS_PASSWORD       the data nodes' password (auth-pass)
#   SENTINEL_QUORUM (2), SENTINEL_DOWN_AFTER_MS (2000), SENTINEL_FAILOVER_TIMEOUT_MS (3000): the
#                        multi-host harness's values, with which clients were served again 7.5 s
#                        after the primary was killed (docs/scaling.md)
#   REDIS_DIR (/data)    where the configuration is written
set -eu
port="${SENTINEL_PORT:-26379}"
self="${SENTINEL_ANNOUNCE:?name this Sentinel}:$port"
name="${REDIS_SENTINEL_MASTER:?}"

# ask host:port password command...: the answer's lines as words, nothing if it cannot be reached
ask() {
  address=$1 password=$2
  shift 2
  if [ -n "$password" ]; then export REDISCLI_AUTH="$password"; else unset REDISCLI_AUTH; fi
  timeout 2 redis-cli -h "${address%:*}" -p "${address##*:}" --raw "$@" 2>/dev/null | tr '\n' ' ' || true
}

master=""
for peer in $(printf %s "${REDIS_SENTINELS:?}" | tr , ' '); do
  [ "$peer" != "$self" ] || continue
  # shellcheck disable=SC2046  # host and port: two words
  set -- $(ask "$peer" "${REDIS_SENTINEL_PASSWORD:-}" SENTINEL get-master-addr-by-name "$name")
  if [ $# -eq 2 ]; then
    master="$1:$2"
    break
  fi
done
if [ -z "$master" ]; then
  for node in $(printf %s "${REDIS_NODES:-}" | tr , ' '); do
    # shellcheck disable=SC2046
    set -- $(ask "$node" "${REDIS_PASSWORD:-}" ROLE)
    if [ "${1:-}" = master ]; then
      master="$node"
      break
    fi
  done
fi
master="${master:-${REDIS_PRIMARY:?}}"
echo "sentinel.sh: $self monitors $name at $master" >&2

conf="${REDIS_DIR:-/data}/sentinel.conf"
{
  echo "port $port"
  echo "dir ${REDIS_DIR:-/data}"
  # Names, not addresses: a container's or pod's address changes when it is recreated.
  echo "sentinel resolve-hostnames yes"
  echo "sentinel announce-hostnames yes"
  echo "sentinel announce-ip ${SENTINEL_ANNOUNCE}"
  echo "sentinel monitor $name ${master%:*} ${master##*:} ${SENTINEL_QUORUM:-2}"
  echo "sentinel down-after-milliseconds $name ${SENTINEL_DOWN_AFTER_MS:-2000}"
  echo "sentinel failover-timeout $name ${SENTINEL_FAILOVER_TIMEOUT_MS:-3000}"
  echo "sentinel parallel-syncs $name 1"
  [ -z "${REDIS_PASSWORD:-}" ] || echo "sentinel auth-pass $name $REDIS_PASSWORD"
  [ -z "${REDIS_SENTINEL_PASSWORD:-}" ] || echo "requirepass $REDIS_SENTINEL_PASSWORD"
} >"$conf"
# Through the image's entrypoint (it hands /data to the redis user and drops root), when there is one.
exec $(command -v docker-entrypoint.sh || true) redis-server "$conf" --sentinel
