#!/usr/bin/env bash
# A single-node MongoDB replica set in Docker (transactions and change streams
# need a replica set), for the MongoDB suites: .github/workflows/mongo.yml
# runs it, and so can a developer with Docker:
#
#   export MONGODB_URI=$(bash test/store/mongo-replset.sh start) && make test
#   bash test/store/mongo-replset.sh logs | stop
#
# Every wait has a time-out that fails (exit 1) and prints the container's
# logs. Env: MONGO_IMAGE (mongo:7), MONGO_PORT (27018), MONGO_NAME
# (mimi-mongo-rs), MONGO_WAIT_S (90 per wait). The server runs with
# enableTestCommands so that test/store/mongo.test.ts can inject commit failures.
set -euo pipefail

image=${MONGO_IMAGE:-mongo:7}
port=${MONGO_PORT:-27018}
name=${MONGO_NAME:-mimi-mongo-rs}
wait_s=${MONGO_WAIT_S:-90}

msh() { docker exec "$name" mongosh --quiet --norc --eval "$1"; }

fail() {
  echo "mongo-replset: $*" >&2
  echo "--- last container logs of $name ---" >&2
  docker logs --tail 200 "$name" >&2 || true
  exit 1
}

# wait_for WHAT EXPECTED JS: until `mongosh --eval JS` prints exactly EXPECTED
# (so "10" is not "1"), for at most wait_s seconds.
wait_for() {
  local what=$1 want=$2 js=$3 got="" i
  for ((i = 0; i < wait_s; i++)); do
    got=$(msh "$js" 2>/dev/null | tail -n 1 | tr -d '[:space:]') || got=""
    if [[ "$got" == "$want" ]]; then return 0; fi
    sleep 1
  done
  fail "timed out after ${wait_s}s waiting for ${what} (last answer: '${got}')"
}

case "${1:-}" in
  start)
    docker rm -f "$name" >/dev/null 2>&1 || true
    docker run -d --name "$name" -p "127.0.0.1:${port}:27017" "$image" \
      --replSet rs0 --bind_ip_all --setParameter enableTestCommands=1 >/dev/null || fail "docker run failed"
    wait_for "mongod to answer" 1 'db.runCommand({ ping: 1 }).ok'
    msh 'rs.initiate({ _id: "rs0", members: [{ _id: 0, host: "localhost:27017" }] }).ok' >/dev/null || fail "rs.initiate failed"
    wait_for "a writable primary" true 'db.hello().isWritablePrimary'
    echo "mongodb://127.0.0.1:${port}/?replicaSet=rs0&directConnection=true"
    ;;
  logs)
    docker logs "$name"
    ;;
  stop)
    docker rm -f "$name" >/dev/null
    ;;
  *)
    echo "usage: $0 start|logs|stop" >&2
    exit 2
    ;;
esac
