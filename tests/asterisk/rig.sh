#!/usr/bin/env bash
# pbxlink real-Asterisk test rig.
#
# Runs a real Asterisk (Debian sid package, currently 22.x) inside a
# debootstrap chroot sharing the host network, so that:
#   - AMI listens on 127.0.0.1:5038 (user pbxlink / pbxlink-test-secret)
#   - cdr_csv writes   DIR/var/log/asterisk/cdr-csv/Master.csv
#   - cdr_custom writes DIR/var/log/asterisk/cdr-custom/Master.csv
#
# Usage: rig.sh <command> [args]   (see `rig.sh help`)
# DIR defaults to $PBXLINK_ASTERISK_ROOT or /var/tmp/pbxlink-asterisk-root.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEFAULT_ROOT="${PBXLINK_ASTERISK_ROOT:-/var/tmp/pbxlink-asterisk-root}"
DEFAULT_CONFDIR="${SCRIPT_DIR}/etc"
AMI_HOST="${PBXLINK_AMI_HOST:-127.0.0.1}"
AMI_PORT="${PBXLINK_AMI_PORT:-5038}"
# rig.sh's own AMI account (manager.conf [rig]); pbxlink uses [pbxlink].
AMI_USER="${PBXLINK_RIG_AMI_USER:-rig}"
AMI_SECRET="${PBXLINK_RIG_AMI_SECRET:-rig-test-secret}"
# Time zone of the PBX. Not UTC on purpose: cdr_csv (usegmtime=yes) writes UTC,
# cdr_custom writes local time, and tests should notice the difference.
ASTERISK_TZ="${PBXLINK_ASTERISK_TZ:-Asia/Kolkata}"
BOOT_TIMEOUT="${PBXLINK_ASTERISK_BOOT_TIMEOUT:-60}"
STOP_TIMEOUT="${PBXLINK_ASTERISK_STOP_TIMEOUT:-15}"
# The Asterisk major version the tests are written against: install rebuilds a chroot that
# holds another one, start refuses it.
ASTERISK_MAJOR="${PBXLINK_ASTERISK_MAJOR:-22}"
APT_OPTS=(-o Acquire::Check-Valid-Until=false -o Acquire::Retries=3)

log() { printf '[rig] %s\n' "$*" >&2; }
die() { printf '[rig] ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
    cat <<EOF
Usage: $(basename "$0") <command> [args]

  install [DIR]            debootstrap Debian sid into DIR and install asterisk
                           (skipped if DIR holds Asterisk 22.x; rebuilt if another)
  start [DIR] [CONFDIR]    install our configs from CONFDIR (default
                           ${DEFAULT_CONFDIR}), clear CDR files, start
                           asterisk and wait until fully booted (restarts if running)
  stop [DIR]               stop asterisk (safe when not running), unmount proc
  status [DIR]             exit 0 if asterisk is running and answering the CLI
  rx [DIR] "cli command"   run an Asterisk CLI command
  call-in DID CALLERID [HOLD_SECONDS]
                           AMI Originate Local/DID@from-trunk with the lead's
                           caller id (lead hangs up after HOLD_SECONDS, default 60)
  call-out EXT NUMBER [HOLD_SECONDS]
                           AMI Originate Local/NUMBER@from-internal with agent
                           EXT as caller id (agent hangs up after HOLD_SECONDS)
  ami Action [Key: Value]...
                           send one AMI action, print the response
  cdr [DIR]                print both CDR files (cdr-csv and cdr-custom)

DIR defaults to \$PBXLINK_ASTERISK_ROOT or /var/tmp/pbxlink-asterisk-root.
EOF
}

need_root() {
    [ "$(id -u)" -eq 0 ] || die "must be run as root (debootstrap/chroot/mount)"
}

# Asterisk's pid inside the chroot (pid namespace is shared with the host).
asterisk_pid() {
    local root="$1" pid=""
    # (DIR/var/run is an absolute symlink to /run: never go through it from the host)
    for f in "${root}/run/asterisk/asterisk.pid" "${root}/var/tmp/pbxlink-rig.pid"; do
        if [ -r "$f" ]; then
            pid="$(tr -dc '0-9' <"$f")"
            if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
                && [ "$(readlink "/proc/${pid}/root" 2>/dev/null || true)" = "$(readlink -f "$root")" ]; then
                echo "$pid"
                return 0
            fi
        fi
    done
    return 1
}

cli() {
    local root="$1"; shift
    chroot "$root" /usr/sbin/asterisk -rx "$*"
}

is_running() {
    local root="$1"
    asterisk_pid "$root" >/dev/null || return 1
    cli "$root" "core show version" >/dev/null 2>&1
}

mount_proc() {
    local root="$1"
    if ! mountpoint -q "${root}/proc"; then
        mount -t proc proc "${root}/proc"
    fi
}

umount_proc() {
    local root="$1"
    if mountpoint -q "${root}/proc"; then
        umount "${root}/proc" || umount -l "${root}/proc"
    fi
}

# The Asterisk package version installed in the chroot at $1 (read from its dpkg database),
# or nothing when there is none.
asterisk_version() {
    dpkg-query --admindir="$1/var/lib/dpkg" -W -f '${Version}' asterisk 2>/dev/null || true
}

# Whether the chroot at $1 holds Asterisk ${ASTERISK_MAJOR}.x (the tests are written against it).
asterisk_version_ok() {
    local v
    v="$(asterisk_version "$1")"
    v="${v#*:}" # the epoch, "1:22.10.1+dfsg..."
    [[ "$v" == "${ASTERISK_MAJOR}."* ]]
}

cmd_install() {
    need_root
    local root="${1:-$DEFAULT_ROOT}"
    case "$(readlink -m "$root")" in
        / | /usr | /var | /var/tmp | /tmp | /root | /home) die "refusing to use ${root} as the chroot" ;;
    esac
    if [ -x "${root}/usr/sbin/asterisk" ]; then
        if asterisk_version_ok "$root"; then
            log "asterisk $(asterisk_version "$root") already installed in ${root}; nothing to do"
            return 0
        fi
        log "${root} holds asterisk '$(asterisk_version "$root")', not ${ASTERISK_MAJOR}.x; rebuilding the chroot"
        if asterisk_pid "$root" >/dev/null; then
            cmd_stop "$root"
        fi
        umount_proc "$root"
        rm -rf --one-file-system "$root"
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! command -v debootstrap >/dev/null 2>&1; then
        log "installing debootstrap on the host"
        apt-get "${APT_OPTS[@]}" update
        apt-get "${APT_OPTS[@]}" install -y --no-install-recommends debootstrap
    fi
    case "$(readlink -m "$root")" in
        / | /usr | /var | /var/tmp | /tmp | /root | /home) die "refusing to use ${root} as the chroot" ;;
    esac
    if [ -d "${root}/debootstrap" ]; then
        log "${root} holds an incomplete debootstrap; removing it"
        umount_proc "$root"
        rm -rf --one-file-system "$root"
    fi
    mkdir -p "$root"
    if [ ! -x "${root}/usr/bin/apt-get" ] || [ ! -e "${root}/var/lib/dpkg/status" ]; then
        log "debootstrap --variant=minbase sid ${root} (takes a few minutes)"
        debootstrap --variant=minbase sid "$root"
    else
        log "base system already present in ${root}, skipping debootstrap"
    fi
    [ -s "${root}/etc/resolv.conf" ] || cp -L /etc/resolv.conf "${root}/etc/resolv.conf"
    # Never try to start services inside the chroot.
    printf '#!/bin/sh\nexit 101\n' >"${root}/usr/sbin/policy-rc.d"
    chmod 755 "${root}/usr/sbin/policy-rc.d"
    mount_proc "$root"
    trap 'umount_proc "'"$root"'"' EXIT
    log "installing asterisk into the chroot"
    chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" update
    chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y --no-install-recommends asterisk asterisk-modules
    chroot "$root" apt-get clean
    umount_proc "$root"
    trap - EXIT
    [ -x "${root}/usr/sbin/asterisk" ] || die "asterisk binary missing after install"
    asterisk_version_ok "$root" ||
        die "installed asterisk '$(asterisk_version "$root")' in ${root}, not ${ASTERISK_MAJOR}.x (Debian sid moved on?): the tests need Asterisk ${ASTERISK_MAJOR}"
    # Keep the package's sample configs for reference; start replaces etc/asterisk.
    if [ ! -d "${root}/etc/asterisk.dist" ]; then
        cp -a "${root}/etc/asterisk" "${root}/etc/asterisk.dist"
    fi
    log "installed asterisk $(chroot "$root" dpkg-query -W -f '${Version}' asterisk) in ${root}"
}

cmd_stop() {
    need_root
    local root="${1:-$DEFAULT_ROOT}" pid i
    if [ ! -d "$root" ]; then
        log "no rig at ${root}; nothing to stop"
        return 0
    fi
    if pid="$(asterisk_pid "$root")"; then
        log "stopping asterisk (pid ${pid})"
        cli "$root" "core stop now" >/dev/null 2>&1 || true
        for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "asterisk did not exit within ${STOP_TIMEOUT}s; sending SIGTERM"
            kill -TERM "$pid" 2>/dev/null || true
            sleep 2
            if kill -0 "$pid" 2>/dev/null; then
                log "sending SIGKILL to ${pid}"
                kill -KILL "$pid" 2>/dev/null || true
                sleep 0.5
            fi
        fi
        log "asterisk stopped"
    else
        log "asterisk is not running"
    fi
    rm -f "${root}/var/tmp/pbxlink-rig.pid"
    umount_proc "$root"
}

cmd_start() {
    need_root
    local root="${1:-$DEFAULT_ROOT}" confdir="${2:-$DEFAULT_CONFDIR}" pid i t0
    t0=$(date +%s)
    [ -x "${root}/usr/sbin/asterisk" ] || die "no asterisk in ${root}; run: $0 install ${root}"
    asterisk_version_ok "$root" ||
        die "${root} holds asterisk '$(asterisk_version "$root")', not ${ASTERISK_MAJOR}.x; run: $0 install ${root} (rebuilds it)"
    [ -f "${confdir}/modules.conf" ] || die "config dir ${confdir} has no modules.conf"
    if asterisk_pid "$root" >/dev/null; then
        log "asterisk already running in ${root}; restarting it"
        cmd_stop "$root"
    fi
    mount_proc "$root"

    log "installing configs from ${confdir}"
    if [ ! -d "${root}/etc/asterisk.dist" ]; then
        cp -a "${root}/etc/asterisk" "${root}/etc/asterisk.dist"
    fi
    find "${root}/etc/asterisk" -mindepth 1 -delete
    cp -r "${confdir}/." "${root}/etc/asterisk/"

    # Asterisk ignores $TZ: its local time comes from the chroot's /etc/localtime.
    [ -e "${root}/usr/share/zoneinfo/${ASTERISK_TZ}" ] || die "unknown time zone ${ASTERISK_TZ}"
    ln -sfn "/usr/share/zoneinfo/${ASTERISK_TZ}" "${root}/etc/localtime"
    echo "${ASTERISK_TZ}" >"${root}/etc/timezone"

    log "clearing old CDR files and logs"
    mkdir -p "${root}/var/log/asterisk/cdr-csv" "${root}/var/log/asterisk/cdr-custom" \
        "${root}/run/asterisk" "${root}/var/lib/asterisk" "${root}/var/spool/asterisk"
    rm -f "${root}"/var/log/asterisk/cdr-csv/*.csv "${root}"/var/log/asterisk/cdr-custom/*.csv \
        "${root}/var/log/asterisk/messages" "${root}/var/log/asterisk/messages.log" \
        "${root}/var/log/asterisk/full" "${root}/var/log/asterisk/rig-console.log"
    chroot "$root" chown -R asterisk:asterisk /etc/asterisk /var/log/asterisk \
        /run/asterisk /var/lib/asterisk /var/spool/asterisk
    chmod 750 "${root}/etc/asterisk"

    log "starting asterisk (log: ${root}/var/log/asterisk/rig-console.log)"
    setsid chroot "$root" /usr/sbin/asterisk -f -n -U asterisk -G asterisk \
        </dev/null >"${root}/var/log/asterisk/rig-console.log" 2>&1 &
    pid=$!
    echo "$pid" >"${root}/var/tmp/pbxlink-rig.pid"

    # Wait for the control socket, then for full boot.
    for ((i = 0; i < BOOT_TIMEOUT * 10; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "${root}/var/log/asterisk/rig-console.log" >&2 || true
            die "asterisk exited during startup"
        fi
        if cli "$root" "core waitfullybooted" >/dev/null 2>&1; then
            break
        fi
        sleep 0.1
    done
    if ! cli "$root" "core waitfullybooted" >/dev/null 2>&1; then
        tail -n 30 "${root}/var/log/asterisk/rig-console.log" >&2 || true
        die "asterisk did not boot within ${BOOT_TIMEOUT}s"
    fi
    # AMI must accept connections too.
    for ((i = 0; i < 50; i++)); do
        if (exec 3<>"/dev/tcp/${AMI_HOST}/${AMI_PORT}") 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    log "asterisk $(cli "$root" "core show version" | awk '{print $2}') (TZ=${ASTERISK_TZ}) fully booted in $(($(date +%s) - t0))s; AMI on ${AMI_HOST}:${AMI_PORT}"
}

# AMI client: ami.py ACTION [Key: Value]... ; prints the response block(s).
# With --wait-originate it waits for the OriginateResponse event of its ActionID.
ami_py() {
    python3 - "$@" <<'PY'
import os, signal, socket, sys, time, uuid

signal.signal(signal.SIGPIPE, signal.SIG_DFL)

host = os.environ.get("AMI_HOST", "127.0.0.1")
port = int(os.environ.get("AMI_PORT", "5038"))
user = os.environ["AMI_USER"]
secret = os.environ["AMI_SECRET"]
args = sys.argv[1:]
wait_orig = False
if args and args[0] == "--wait-originate":
    wait_orig = True
    args = args[1:]
action, headers = args[0], args[1:]

s = socket.create_connection((host, port), timeout=10)
f = s.makefile("rb")
f.readline()  # banner

def send(lines):
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())

def read_msg():
    msg = {}
    raw = []
    while True:
        line = f.readline()
        if not line:
            raise SystemExit("AMI connection closed")
        line = line.decode(errors="replace").rstrip("\r\n")
        if line == "":
            if raw:
                return msg, raw
            continue
        raw.append(line)
        k, _, v = line.partition(":")
        msg.setdefault(k.strip(), v.strip())

send(["Action: Login", "Username: " + user, "Secret: " + secret, "Events: " + ("call" if wait_orig else "off")])
while True:
    m, raw = read_msg()
    if "Response" in m:
        if m["Response"] != "Success":
            raise SystemExit("AMI login failed: " + " | ".join(raw))
        break

aid = "rig-" + uuid.uuid4().hex[:12]
send(["Action: " + action, "ActionID: " + aid] + headers)
rc = 0
deadline = time.time() + 120
s.settimeout(120)
while time.time() < deadline:
    m, raw = read_msg()
    if m.get("ActionID") != aid:
        continue
    if "Response" in m:
        print("\n".join(raw) + "\n")
        if m["Response"] == "Error":
            rc = 1
            break
        if not wait_orig and m.get("EventList") != "start":
            break
    elif m.get("Event") == "OriginateResponse":
        print("\n".join(raw) + "\n")
        if m.get("Response") != "Success":
            rc = 2
        break
    else:
        print("\n".join(raw) + "\n")
        if m.get("EventList") == "Complete":
            break
send(["Action: Logoff"])
s.close()
sys.exit(rc)
PY
}

run_ami() {
    AMI_HOST="$AMI_HOST" AMI_PORT="$AMI_PORT" AMI_USER="$AMI_USER" AMI_SECRET="$AMI_SECRET" ami_py "$@"
}

cmd_call_in() {
    [ $# -ge 2 ] || die "usage: $0 call-in DID CALLERID [HOLD_SECONDS]"
    local did="$1" cid="$2" hold="${3:-60}"
    log "inbound call: lead ${cid} -> DID ${did} (lead holds up to ${hold}s)"
    run_ami Originate "Channel: Local/${did}@from-trunk" "CallerID: <${cid}>" \
        "Application: Wait" "Data: ${hold}" "Timeout: 45000" "Async: true" \
        "Variable: PBXLINK_LEAD=${cid}"
}

cmd_call_out() {
    [ $# -ge 2 ] || die "usage: $0 call-out EXT NUMBER [HOLD_SECONDS]"
    local ext="$1" number="$2" hold="${3:-60}"
    log "outbound call: agent ${ext} -> ${number} (agent holds up to ${hold}s)"
    run_ami Originate "Channel: Local/${number}@from-internal" "CallerID: \"Agent ${ext}\" <${ext}>" \
        "Application: Wait" "Data: ${hold}" "Timeout: 45000" "Async: true" \
        "Variable: PBXLINK_AGENT=${ext}"
}

main() {
    local cmd="${1:-help}"
    [ $# -gt 0 ] && shift
    case "$cmd" in
        install) cmd_install "$@" ;;
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        status)
            local root="${1:-$DEFAULT_ROOT}"
            if is_running "$root"; then log "asterisk is running"; else log "asterisk is not running"; exit 1; fi
            ;;
        rx)
            need_root
            local root="$DEFAULT_ROOT"
            if [ $# -ge 2 ]; then root="$1"; shift; fi
            [ $# -eq 1 ] || die "usage: $0 rx [DIR] \"cli command\""
            cli "$root" "$1"
            ;;
        call-in) cmd_call_in "$@" ;;
        call-out) cmd_call_out "$@" ;;
        ami)
            [ $# -ge 1 ] || die "usage: $0 ami Action [Key: Value]..."
            run_ami "$@"
            ;;
        cdr)
            local root="${1:-$DEFAULT_ROOT}"
            echo "== ${root}/var/log/asterisk/cdr-csv/Master.csv"
            cat "${root}/var/log/asterisk/cdr-csv/Master.csv" 2>/dev/null || true
            echo "== ${root}/var/log/asterisk/cdr-custom/Master.csv"
            cat "${root}/var/log/asterisk/cdr-custom/Master.csv" 2>/dev/null || true
            ;;
        help | -h | --help) usage ;;
        *) usage >&2; die "unknown command: ${cmd}" ;;
    esac
}

main "$@"
