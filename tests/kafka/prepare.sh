#!/usr/bin/env bash
# Gather the jars of a single-node KRaft Kafka broker (org.apache.kafka:kafka_2.13 and every runtime dependency)
# from Maven Central into a cache outside the checkout, keyed by version. A second run with the cache present
# does nothing.
#
#   tests/kafka/prepare.sh          # prints the libs directory on its last line
#
# Environment: SERVING_CACHE (default ~/.cache/serving), KAFKA_VERSION (default 4.4.0),
# KAFKA_PREPARE_TIMEOUT (seconds Maven may take, default 900).
set -euo pipefail

KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
cache="${SERVING_CACHE:-$HOME/.cache/serving}/kafka"
dest="$cache/$KAFKA_VERSION"
libs="$dest/libs"
pom="$(cd "$(dirname "$0")" && pwd)/pom.xml"

log() { echo "kafka prepare: $*" >&2; }

# `.complete` is written last: a run that was cut off leaves no libs directory that looks usable.
if [ -f "$dest/.complete" ] && [ -d "$libs" ]; then
  echo "$libs"
  exit 0
fi

command -v mvn >/dev/null 2>&1 || { log "mvn not found (Debian: apt-get install maven)"; exit 1; }
command -v java >/dev/null 2>&1 || { log "java not found (Kafka $KAFKA_VERSION needs Java 17 or later)"; exit 1; }

mkdir -p "$dest"
partial="$dest/libs.partial"
rm -rf "$partial"
log "resolving org.apache.kafka:kafka_2.13:$KAFKA_VERSION and its runtime dependencies into $libs"
# The Maven repository lives in the cache too, so that removing the cache removes everything this fetched.
# -U: a resolution that failed before (no network then) is tried again rather than taken from Maven's memory.
# Debian's Maven colours its output even in batch mode; sed takes the escapes out of the log.
timeout "${KAFKA_PREPARE_TIMEOUT:-900}" mvn -B -q -U -f "$pom" \
  -Dmaven.repo.local="$cache/m2" \
  -Dkafka.version="$KAFKA_VERSION" \
  dependency:copy-dependencies \
  -DincludeScope=runtime \
  -DoutputDirectory="$partial" 2>&1 | sed -e $'s/\x1b\\[[0-9;]*m//g' >&2 ||
  {
    status="${PIPESTATUS[0]}"
    [ "$status" = 124 ] && log "Maven ran past ${KAFKA_PREPARE_TIMEOUT:-900}s and was stopped"
    log "Maven failed (exit $status); nothing was cached"
    exit 1
  }

for jar in "kafka_2.13-$KAFKA_VERSION.jar" "kafka-server-$KAFKA_VERSION.jar" "kafka-storage-$KAFKA_VERSION.jar"; do
  [ -f "$partial/$jar" ] || { log "$jar is missing from the resolved jars"; exit 1; }
done
rm -rf "$libs"
mv "$partial" "$libs"
touch "$dest/.complete"
log "$(find "$libs" -name '*.jar' | wc -l) jars, $(du -sh "$libs" | cut -f1)"
echo "$libs"
