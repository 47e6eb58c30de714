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

# Watchdog: the test-only fault switch, then SIGUSR2 = a hung agent; systemd must restart it.
enable_fault_switch() {
    printf '\n[testing]\nfault_switches = true\n' >>/etc/dbagent/agent.toml && systemctl restart dbagent.service
}
step fault-switch-enabled enable_fault_switch
watchdog_restart() {
    local pid restarts t0
    pid="$(prop dbagent.service MainPID)"; restarts="$(prop dbagent.service NRestarts)"
    kill -USR2 "$pid"
    t0=$SECONDS
    while [ $((SECONDS - t0)) -lt 150 ]; do
        sleep 1
        if [ "$(prop dbagent.service NRestarts)" -gt "$restarts" ] && systemctl is-active -q dbagent.service; then
            echo "restarted after $((SECONDS - t0)) s: pid $pid -> $(prop dbagent.service MainPID)"
            journalctl -u dbagent.service -o cat --no-pager | grep -iE 'watchdog|SIGUSR2' | tail -n 5
            return 0
        fi
    done
    echo "no restart within 150 s (NRestarts $(prop dbagent.service NRestarts))"; return 1
}
step watchdog-restarts-hung-agent watchdog_restart
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
