#!/usr/bin/env bash
# `make run`: a collector on embedded SQLite under $WARD_HOME, a local agent enrolled with a
# single-use token, both stopped cleanly by Ctrl-C. Re-running reuses the CA, the store and
# the agent's identity; the agent's spool carries anything unsent across restarts.
set -euo pipefail
: "${WARD_HOME:?}" "${BIN:=bin}"
WATCH=${WATCH:-}
LISTEN=${WARD_LISTEN:-127.0.0.1:7443}

if [ "$(id -u)" -ne 0 ]; then
  echo "make run: the agent loads eBPF programs and must run as root (try: sudo make run)" >&2
  exit 1
fi

mkdir -p "$WARD_HOME"
WARD_HOME=$(cd "$WARD_HOME" && pwd)
export WARD_HOME
default_watch="$WARD_HOME/watched"
mkdir -p "$default_watch"
watch="$default_watch${WATCH:+,$WATCH}"
logs="$WARD_HOME/logs"
mkdir -p "$logs"

pids=()
stopping=
cleanup() {
  stopping=1
  trap - INT TERM EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    echo
    echo "stopping Ward…"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  echo "stopped. State is kept in $WARD_HOME (events, CA, agent identity and spool)."
}
trap cleanup INT TERM EXIT

"$BIN/ward-collector" --home "$WARD_HOME" --listen "$LISTEN" >>"$logs/collector.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  if "$BIN/wardctl" --home "$WARD_HOME" agents >/dev/null 2>&1; then break; fi
  if ! kill -0 "${pids[0]}" 2>/dev/null; then
    echo "ward-collector exited during start-up; last log lines:" >&2
    tail -n 20 "$logs/collector.log" >&2
    exit 1
  fi
  sleep 0.1
done
"$BIN/wardctl" --home "$WARD_HOME" agents >/dev/null

agent_state="$WARD_HOME/agent"
if [ ! -s "$agent_state/identity/identity.json" ]; then
  token=$("$BIN/wardctl" --home "$WARD_HOME" token create --ttl 10m 2>/dev/null)
  "$BIN/ward-agent" enroll --collector "$LISTEN" --token "$token" \
    --ca-file "$WARD_HOME/collector/pki/ca.crt" --state-dir "$agent_state"
fi

"$BIN/ward-agent" run --state-dir "$agent_state" --watch "$watch" >>"$logs/agent.log" 2>&1 &
pids+=($!)
sleep 1
if ! kill -0 "${pids[1]}" 2>/dev/null; then
  echo "ward-agent exited during start-up; last log lines:" >&2
  tail -n 20 "$logs/agent.log" >&2
  exit 1
fi

cat <<TXT

Ward is running.
  collector  $LISTEN   store $WARD_HOME/collector/ward.db   log $logs/collector.log
  agent      watching  ${watch//,/ }   log $logs/agent.log

Try it (in another terminal):
  cp tests/testdata/fhir-part2-bundle.json $default_watch/
  $BIN/wardctl --home $WARD_HOME events            # stored events, newest last
  $BIN/wardctl --home $WARD_HOME events -f         # follow live
  $BIN/wardctl --home $WARD_HOME events -o json    # one JSON object per line

Ctrl-C stops both.
TXT
wait -n "${pids[@]}" || true
if [ -z "$stopping" ]; then
  echo "a Ward process exited on its own; see $logs" >&2
  exit 1
fi
