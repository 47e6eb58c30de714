# Helpers for /share/run.sh inside the dbagent test VM; run-vm.sh copies this file into the share as
# /share/vmtest-lib.sh. Source it:  . /share/vmtest-lib.sh
#
#   step NAME CMD...        run CMD; "PASS NAME <ms>" if it exits 0, else "FAIL NAME exit <code>: <last line>"
#   step_fails NAME CMD...  the opposite: PASS when CMD fails (for "wrong key refused" checks)
#   pass NAME [MS] / fail NAME REASON   report directly
#   now_ms                  milliseconds since boot
# Command output goes to /out/steps.log (one header per step), never into result.log.
# A FAIL does not stop the script; call `stop_on_fail` after a step that later steps depend on.

now_ms() { awk '{printf "%d", $1 * 1000}' /proc/uptime; }
pass() { echo "PASS $1 ${2:-0}"; }
fail() { local name="$1"; shift; echo "FAIL $name $*"; VMTEST_FAILED=1; }
VMTEST_FAILED=0
VMTEST_STEPS_LOG="${VMTEST_STEPS_LOG:-/out/steps.log}"

_last_line() { tail -n 1 "$1" 2>/dev/null | tr -d '\r' | cut -c1-200; }

step() {
    local name="$1"; shift
    local t0 t1 rc=0 tmp
    tmp="$(mktemp)"
    t0="$(now_ms)"
    "$@" >"$tmp" 2>&1 || rc=$?
    t1="$(now_ms)"
    { echo "=== $name: $* (exit $rc, $((t1 - t0)) ms)"; cat "$tmp"; } >>"$VMTEST_STEPS_LOG"
    if [[ $rc == 0 ]]; then
        pass "$name" "$((t1 - t0))"
    else
        fail "$name" "exit $rc: $(_last_line "$tmp")"
    fi
    rm -f "$tmp"
    return "$rc"
}

step_fails() {
    local name="$1"; shift
    local t0 t1 rc=0 tmp
    tmp="$(mktemp)"
    t0="$(now_ms)"
    "$@" >"$tmp" 2>&1 || rc=$?
    t1="$(now_ms)"
    { echo "=== $name (expected to fail): $* (exit $rc, $((t1 - t0)) ms)"; cat "$tmp"; } >>"$VMTEST_STEPS_LOG"
    if [[ $rc != 0 ]]; then
        pass "$name" "$((t1 - t0))"
    else
        fail "$name" "succeeded but was expected to fail"
    fi
    rm -f "$tmp"
    [[ $rc != 0 ]]
}

# Stop the script (the driver still writes END and powers off) if any step failed so far.
stop_on_fail() { if [[ $VMTEST_FAILED != 0 ]]; then echo "stopping after the first failure"; exit 1; fi; }
