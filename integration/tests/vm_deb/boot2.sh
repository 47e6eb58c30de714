#!/bin/bash
# Boot 2 (same root overlay, same data disk): the agent reopened the volume before PostgreSQL started;
# then upgrade, watchdog, systemd-analyze verify, purge.
. /share/vmtest-lib.sh
PG_DIR=/var/lib/postgresql/15/main
PG=postgresql@15-main.service
OUT=/out
prop() { systemctl show -p "$2" --value "$1"; }

step agent-active-after-reboot systemctl is-active dbagent.service
step volume-reopened-at-boot sh -c "systemctl show -p StatusText --value dbagent | tee /dev/stderr | grep -q '1 opened, 0 failed'"
step volume-mounted sh -c "findmnt -n -o SOURCE $PG_DIR | grep -q '^/dev/mapper/'"
step pg-active-after-reboot systemctl is-active $PG
agent_ready_before_pg() {
    local ready pg
    ready="$(prop dbagent.service ActiveEnterTimestampMonotonic)"
    pg="$(prop $PG InactiveExitTimestampMonotonic)"
    echo "agent ready at $ready us, postgres started at $pg us"
    [ "$ready" -gt 0 ] && [ "$pg" -gt "$ready" ]
}
step agent-ready-before-pg agent_ready_before_pg
row() { runuser -u postgres -- psql -tAc 'SELECT v FROM marker' | tee /dev/stderr | grep -qx written-in-boot-1; }
step row-survived-reboot row
stop_on_fail

# What must survive the upgrade byte for byte: configuration, certificates, the KEK, the keystore.
# The rest of the state (registry, operation journal, volume records) must all still be there.
kept() { md5sum /etc/dbagent/agent.toml /etc/dbagent/kek /etc/dbagent/tls/* /var/lib/dbagent/keystore/* 2>&1; }
state_files() { find /var/lib/dbagent -type f | sort; }
kept >"$OUT/kept-before-upgrade.txt"
state_files >"$OUT/state-before-upgrade.txt"
OLD_PID="$(prop dbagent.service MainPID)"
PG_PID="$(prop $PG MainPID)"
step upgrade bash -c 'dpkg -i /share/dbagent-new.deb 2>&1 | tee /out/dpkg-upgrade.txt; exit ${PIPESTATUS[0]}'
step upgraded-version bash -c '[ "$(dpkg-query -W -f="\${Version}" dbagent)" = "$(cat /share/new-version)" ]'
kept_unchanged() { diff "$OUT/kept-before-upgrade.txt" <(kept); }
step upgrade-kept-config-keys kept_unchanged
state_kept() { local gone; gone="$(comm -23 "$OUT/state-before-upgrade.txt" <(state_files))"; echo "$gone"; [ -z "$gone" ]; }
step upgrade-kept-state state_kept
restarted() { systemctl is-active dbagent.service && [ "$(prop dbagent.service MainPID)" != "$OLD_PID" ]; }
step upgrade-restarted-agent restarted
pg_not_bounced() { [ "$(prop $PG MainPID)" = "$PG_PID" ]; }
step upgrade-did-not-bounce-pg pg_not_bounced
step row-after-upgrade row

# Watchdog: with the test-only fault switch on, SIGUSR2 stops the watchdog pets and nothing else, as
# a hung runtime would. Any restart is not enough (without the switch SIGUSR2 kills the agent and
# Restart=on-failure alone brings it back): the same process must stay up, silent, until systemd's
# watchdog timeout; systemd must log that timeout and the result 'watchdog' (SIGABRT, not SIGUSR2);
# the restart must follow it; and the new process must answer the API again.
enable_fault_switch() {
    printf '\n[testing]\nfault_switches = true\n' >>/etc/dbagent/agent.toml && systemctl restart dbagent.service || return
    # The agent says at start that the switch is on (it never was before in this journal).
    for _ in $(seq 1 100); do
        journalctl -u dbagent.service -o cat --no-pager | grep 'SIGUSR2 stops the watchdog' && return 0
        sleep 0.2
    done
    echo "the agent never said the fault switch is on"; return 1
}
step fault-switch-enabled enable_fault_switch
answers() { dbagentctl --config /share/guest-client.toml --timeout 30 status; }
step agent-answers-before-hang answers
# in_order FILE PATTERN...: the first line of FILE with each (fixed-string) pattern comes after the
# previous pattern's; fails naming the first pattern that is missing or out of order.
in_order() {
    local log="$1" prev=0 n; shift
    for pattern in "$@"; do
        n="$(grep -n -m1 -F -- "$pattern" "$log" | cut -d: -f1)"
        if [ -z "$n" ]; then echo "the journal has no line with: $pattern"; return 1; fi
        if [ "$n" -le "$prev" ]; then echo "out of order (line $n after line $prev): $pattern"; return 1; fi
        prev="$n"
    done
}
watchdog_restart() {
    local pid restarts cursor t0 alive_until=-1 result result_seen=none new log=/out/watchdog-journal.txt
    pid="$(prop dbagent.service MainPID)"; restarts="$(prop dbagent.service NRestarts)"
    cursor="$(journalctl -u dbagent.service -n 1 --show-cursor -o cat --no-pager | sed -n 's/^-- cursor: //p')"
    [ -n "$cursor" ] || { echo "no journal cursor for dbagent.service"; return 1; }
    kill -USR2 "$pid"
    t0=$SECONDS
    until [ "$(prop dbagent.service NRestarts)" -gt "$restarts" ] && systemctl is-active -q dbagent.service; do
        if [ $((SECONDS - t0)) -ge 150 ]; then echo "no restart within 150 s (NRestarts $(prop dbagent.service NRestarts))"; return 1; fi
        # Hung, not dead: how long the signalled process was still the unit's main process.
        if kill -0 "$pid" 2>/dev/null && [ "$(prop dbagent.service MainPID)" = "$pid" ]; then alive_until=$((SECONDS - t0)); fi
        # Result is reset when the restart starts the unit again: keep a failure result seen meanwhile.
        result="$(prop dbagent.service Result)"
        [ "$result" = success ] || result_seen="$result"
        sleep 0.5
    done
    new="$(prop dbagent.service MainPID)"
    journalctl -u dbagent.service --after-cursor="$cursor" -o short-monotonic --no-pager >"$log"
    echo "pid $pid -> $new after $((SECONDS - t0)) s; the old process ran for $alive_until s after SIGUSR2; Result seen: $result_seen"
    grep -E 'fault switch|Watchdog timeout|Main process exited|Failed with result|Scheduled restart' "$log"
    [ "$new" != "$pid" ] && [ "$new" -gt 0 ] || { echo "the main PID did not change"; return 1; }
    ! kill -0 "$pid" 2>/dev/null || { echo "the hung process $pid is still running"; return 1; }
    # The pets come every WatchdogSec/2 = 15 s, so the timeout fires 15-30 s after the last one.
    [ "$alive_until" -ge 10 ] || { echo "the process died within $alive_until s of SIGUSR2: killed, not hung"; return 1; }
    case "$result_seen" in none | watchdog) ;; *) echo "the unit failed with result $result_seen, not watchdog"; return 1 ;; esac
    ! grep -q 'status=12/USR2' "$log" || { echo "SIGUSR2 killed the agent"; return 1; }
    in_order "$log" "dbagent[$pid]: SIGUSR2 fault switch: no more watchdog pets" 'Watchdog timeout' \
        "Killing process $pid (dbagent) with signal SIGABRT" 'status=6/ABRT' "Failed with result 'watchdog'" \
        'Scheduled restart job' "dbagent[$new]: serving on" || return
    # systemd logs "Started" when READY=1 arrives, which races the agent's own "serving on" line: both
    # must follow the restart job, in either order.
    in_order "$log" 'Scheduled restart job' 'Started dbagent.service'
}
step watchdog-restarts-hung-agent watchdog_restart
step agent-answers-after-watchdog answers
step row-after-watchdog row

verify_clean() {
    local out
    out="$(systemd-analyze verify "$(systemctl show -p FragmentPath --value dbagent.service)" 2>&1)" || { echo "$out"; return 1; }
    echo "$out"; [ -z "$out" ]
}
step systemd-analyze-verify verify_clean

# Evidence for the options the unit leaves out (docs/packaging.md): a mount made by a service with a
# mount namespace stays invisible to the host.
# (Probe units are files in /run: systemd-run needs D-Bus, which the guest does not have.)
probe() {
    local name="$1"; shift
    printf '[Service]\nType=oneshot\n' >"/run/systemd/system/$name.service"
    printf '%s\n' "$@" >>"/run/systemd/system/$name.service"
    systemctl daemon-reload && systemctl start "$name.service"
    local rc=$?
    journalctl -u "$name.service" -o cat --no-pager | tail -n 3
    return $rc
}
namespaced_mount_invisible() {
    mkdir -p /mnt/ns-probe
    probe dbagent-probe-ns ProtectSystem=strict ReadWritePaths=/mnt/ns-probe \
        'ExecStart=/usr/bin/mount -t tmpfs probe /mnt/ns-probe' 'ExecStart=/usr/bin/findmnt /mnt/ns-probe' \
        || { echo "the probe could not mount"; return 1; }
    if findmnt /mnt/ns-probe; then echo "visible on the host"; umount /mnt/ns-probe; return 1; fi
    echo "the probe saw its mount; the host does not"
}
step evidence-namespaced-mount-invisible namespaced_mount_invisible

step pg-stop systemctl stop $PG
step purge bash -c 'dpkg --purge dbagent 2>&1 | tee /out/dpkg-purge.txt; exit ${PIPESTATUS[0]}'
step_fails purge-stopped-agent systemctl is-active dbagent.service
step purge-removed-config sh -c '! [ -e /etc/dbagent/agent.toml ] && ! [ -e /usr/bin/dbagent ]'
step purge-kept-keystore sh -c '[ -d /var/lib/dbagent/keystore ] && [ -n "$(ls -A /var/lib/dbagent/keystore)" ]'
step purge-kept-kek sh -c '[ "$(stat -c %a:%s /etc/dbagent/kek)" = 600:32 ]'
step purge-says-where sh -c 'grep -q /var/lib/dbagent/keystore /out/dpkg-purge.txt && grep -q /etc/dbagent/kek /out/dpkg-purge.txt'
sync
