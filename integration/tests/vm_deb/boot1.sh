#!/bin/bash
# Boot 1: install the package, provision it, let the host drive the agent over mTLS (register an
# instance, create its encrypted volume), then run PostgreSQL on that volume and write a row.
. /share/vmtest-lib.sh
PG_DIR=/var/lib/postgresql/15/main
OUT=/out

step dpkg-install bash -c 'dpkg -i /share/dbagent.deb 2>&1 | tee /out/dpkg-install.txt; exit ${PIPESTATUS[0]}'
stop_on_fail
step unit-enabled systemctl is-enabled dbagent.service
# Without the API certificate the unit is skipped by its condition, not failed.
step_fails inactive-until-provisioned systemctl is-active dbagent.service
step_fails not-failed-before-provisioning systemctl is-failed dbagent.service
step kek-generated sh -c '[ "$(stat -c %a:%s:%U /etc/dbagent/kek)" = 600:32:root ]'
step conffile-registered sh -c 'dpkg-query -W -f="\${Conffiles}\n" dbagent | grep -q " /etc/dbagent/agent.toml "'
step depends-line sh -c 'dpkg-query -W -f="\${Depends}\n" dbagent | tee /out/depends.txt'

provision() {
    install -m 0644 /share/tls/server.crt /etc/dbagent/tls/server.crt &&
    install -m 0600 /share/tls/server.key /etc/dbagent/tls/server.key &&
    install -m 0644 /share/tls/client-ca.crt /etc/dbagent/tls/client-ca.crt &&
    install -m 0640 /share/agent.toml /etc/dbagent/agent.toml &&
    # The engine's version folder, as its packaging would have it; the agent creates the mount point.
    install -d -o postgres -g postgres -m 0755 /var/lib/postgresql/15
}
step provision provision
step agent-start systemctl start dbagent.service
step agent-active systemctl is-active dbagent.service
stop_on_fail

# Hardening figures: a plain unit (no hardening) offline, then the installed unit live.
UNIT="$(systemctl show -p FragmentPath --value dbagent.service)"
mkdir -p /tmp/plain && sed '/^# Hardening/,/^SystemCallErrorNumber/d' "$UNIT" >/tmp/plain/dbagent.service
systemd-analyze security --offline=true /tmp/plain/dbagent.service >"$OUT/security-before.txt" 2>&1 || true
systemd-analyze security dbagent.service >"$OUT/security-after.txt" 2>&1 || true
measured() { grep -q 'Overall exposure level' "$OUT/security-before.txt" && grep -q 'Overall exposure level' "$OUT/security-after.txt"; }
step security-measured measured

# The host now talks to the agent through the forwarded port; wait until it says it is done.
touch /share/guest-ready
wait_for_host() {
    for _ in $(seq 1 600); do
        if [ -f /share/host-done ]; then cat /share/host-done; grep -qx ok /share/host-done; return; fi
        sleep 0.5
    done
    echo "the host never wrote /share/host-done"; return 1
}
step host-drove-agent wait_for_host
stop_on_fail

step volume-mounted sh -c "findmnt -n -o SOURCE $PG_DIR | tee /dev/stderr | grep -q '^/dev/mapper/'"
step volume-is-luks2 sh -c "cryptsetup status \$(findmnt -n -o SOURCE $PG_DIR) | grep -q 'type: *LUKS2'"
step volume-owned-by-postgres sh -c "[ \"\$(stat -c %U:%a $PG_DIR)\" = postgres:700 ]"
stop_on_fail

# The database waits for the agent (and so for its volume), without being bounced by agent restarts.
dropin() {
    mkdir -p /etc/systemd/system/postgresql@.service.d &&
    printf '[Unit]\nWants=dbagent.service\nAfter=dbagent.service\n' \
        >/etc/systemd/system/postgresql@.service.d/dbagent.conf &&
    systemctl daemon-reload
}
step pg-dropin dropin
# initdb refuses a mount point that holds lost+found.
step pg-createcluster sh -c "rmdir $PG_DIR/lost+found && pg_createcluster 15 main -- --no-sync"
step pg-start systemctl start postgresql@15-main.service
stop_on_fail
step pg-write-row runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qc \
    "CREATE TABLE marker (v text); INSERT INTO marker VALUES ('written-in-boot-1');"
step pg-stop systemctl stop postgresql@15-main.service
sync
