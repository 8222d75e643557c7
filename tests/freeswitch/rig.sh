#!/usr/bin/env bash
# pbxlink real-FreeSWITCH test rig.
#
# Builds FreeSWITCH 1.10.12 (with spandsp and sofia-sip) from the upstream source tarballs inside a
# Debian 12 (bookworm) minbase debootstrap chroot sharing the host network, and runs it with the
# rig's own minimal configuration (tests/freeswitch/conf), so that:
#   - mod_sofia: profile "internal" (agents' phones, users 100-103) on 127.0.0.1:25060,
#                profile "carrier" (calls from/to the carrier) on 127.0.0.1:25080
#   - mod_event_socket listens on 127.0.0.1:8021 (password ClueCon)
#   - mod_json_cdr writes one file per leg into DIR/usr/local/freeswitch/log/json_cdr
#   - mod_cdr_csv writes DIR/usr/local/freeswitch/log/cdr-csv/Master.csv (template "pbxlink")
#                 and .../cdr-csv/example/Master.csv (stock template "example")
#
# Usage: rig.sh <command> [args]   (see `rig.sh help`)
# DIR defaults to $PBXLINK_FREESWITCH_ROOT or /var/tmp/pbxlink-freeswitch-root.
# The sources default to $PBXLINK_FREESWITCH_SOURCES or <repo root>/../shared/freeswitch.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/../.." && pwd)"
DEFAULT_ROOT="${PBXLINK_FREESWITCH_ROOT:-/var/tmp/pbxlink-freeswitch-root}"
SOURCES="${PBXLINK_FREESWITCH_SOURCES:-${REPO_ROOT}/../shared/freeswitch}"
CONF_SRC="${SCRIPT_DIR}/conf"
FS_VERSION="1.10.12"
# Bump whenever the build recipe below changes (deps, configure flags, modules, steps): the stamp
# then no longer matches and `install` rebuilds.
RECIPE_VERSION="2"
FS_PREFIX="/usr/local/freeswitch"
ESL_HOST="${PBXLINK_ESL_HOST:-127.0.0.1}"
ESL_PORT="${PBXLINK_ESL_PORT:-8021}"
ESL_PASSWORD="${PBXLINK_ESL_PASSWORD:-ClueCon}"
BOOT_TIMEOUT="${PBXLINK_FREESWITCH_BOOT_TIMEOUT:-90}"
STOP_TIMEOUT="${PBXLINK_FREESWITCH_STOP_TIMEOUT:-20}"
# 1: run with FreeSWITCH's core SQL scoreboard (`show channels` needs it; the event-socket client
# re-learns calls in progress with it). Default 0: `-nosql`.
FS_SQL="${PBXLINK_FREESWITCH_SQL:-0}"
DEBIAN_MIRROR="${PBXLINK_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
JOBS="${PBXLINK_FREESWITCH_JOBS:-$(nproc)}"
APT_OPTS=(-o Acquire::Check-Valid-Until=false -o Acquire::Retries=3)
BUILD_DEPS=(build-essential autoconf automake libtool libtool-bin pkg-config libssl-dev
    libcurl4-openssl-dev libpcre3-dev libspeex-dev libspeexdsp-dev libsqlite3-dev libedit-dev
    libtiff-dev yasm nasm uuid-dev libldns-dev libopus-dev libsndfile1-dev zlib1g-dev libjpeg-dev
    libncurses-dev procps ca-certificates)
# The modules the rig loads (FreeSWITCH's build/modules.conf.in holds ~70 by default).
MODULES=(loggers/mod_console loggers/mod_logfile applications/mod_commands applications/mod_dptools
    applications/mod_callcenter applications/mod_db applications/mod_hash applications/mod_expr
    dialplans/mod_dialplan_xml endpoints/mod_sofia endpoints/mod_loopback
    event_handlers/mod_event_socket event_handlers/mod_cdr_csv event_handlers/mod_json_cdr
    formats/mod_sndfile formats/mod_native_file formats/mod_tone_stream xml_int/mod_xml_cdr)
TARBALLS=(spandsp.tar.xz sofia-sip.tar.xz freeswitch-1.10.12.tar.xz)
STAMP_REL="usr/local/freeswitch/.pbxlink-rig-stamp"

log() { printf '[fsrig] %s\n' "$*" >&2; }
die() { printf '[fsrig] ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
    cat <<USAGE
Usage: $(basename "$0") <command> [args]

  install [DIR]          debootstrap bookworm into DIR, install the build dependencies, build and
                         install spandsp, sofia-sip and FreeSWITCH ${FS_VERSION} from the tarballs in
                         \$PBXLINK_FREESWITCH_SOURCES (default <repo>/../shared/freeswitch).
                         Returns at once when DIR holds a complete install of the same tarballs
                         (stamp file DIR/${STAMP_REL}). Build log: DIR/var/tmp/pbxlink-fs-build.log
  start [DIR]            write the rig's config (from ${CONF_SRC}), clear CDR files, logs and recordings,
                         start freeswitch and wait until ESL answers (restarts if running)
  stop [DIR]             stop freeswitch (safe when not running), unmount proc
  restart [DIR]          stop, then start keeping the CDR files (a FreeSWITCH restart mid-test)
  status [DIR]           exit 0 if freeswitch is running and answering fs_cli
  cli [DIR] "command"    run one FreeSWITCH API command through fs_cli
  cdr [DIR]              print Master.csv (both templates) and list the json_cdr files
  paths [DIR]            print the rig's file locations as KEY=VALUE lines

Environment: PBXLINK_FREESWITCH_ROOT, PBXLINK_FREESWITCH_SOURCES, PBXLINK_ESL_PORT (8021),
PBXLINK_ESL_PASSWORD (ClueCon), PBXLINK_FREESWITCH_SQL (1: core SQL on, for \`show channels\`), PBXLINK_FREESWITCH_JOBS (make -j), PBXLINK_DEBIAN_MIRROR.
USAGE
}

need_root() { [ "$(id -u)" -eq 0 ] || die "must be run as root (debootstrap/chroot/mount)"; }

mount_proc() {
    local root="$1"
    mountpoint -q "${root}/proc" || mount -t proc proc "${root}/proc"
}

umount_proc() {
    local root="$1"
    if mountpoint -q "${root}/proc"; then
        umount "${root}/proc" || umount -l "${root}/proc"
    fi
}

mount_devpts() {
    local root="$1"
    mkdir -p "${root}/dev/pts" "${root}/dev/shm"
    mountpoint -q "${root}/dev/pts" || mount -t devpts -o newinstance,ptmxmode=0666 devpts "${root}/dev/pts" || true
}

umount_devpts() {
    local root="$1"
    if mountpoint -q "${root}/dev/pts"; then umount "${root}/dev/pts" || umount -l "${root}/dev/pts"; fi
}

# The stamp of a complete install: FreeSWITCH's version, the recipe version and the sha256 of
# each tarball.
wanted_stamp() {
    echo "freeswitch ${FS_VERSION}"
    echo "recipe ${RECIPE_VERSION}"
    local t
    for t in "${TARBALLS[@]}"; do
        printf '%s  %s\n' "$(sha256sum "${SOURCES}/${t}" | cut -d' ' -f1)" "$t"
    done
    printf 'modules %s\n' "${MODULES[*]}"
}

fs_version() {
    local root="$1"
    chroot "$root" "${FS_PREFIX}/bin/freeswitch" -version 2>/dev/null | tr -d '\r'
}

check_sources() {
    [ -d "$SOURCES" ] || die "no FreeSWITCH sources at ${SOURCES} (set PBXLINK_FREESWITCH_SOURCES; README says where to get them)"
    local t
    for t in "${TARBALLS[@]}"; do
        [ -r "${SOURCES}/${t}" ] || die "missing ${SOURCES}/${t}"
    done
    if [ -r "${SOURCES}/SHA256SUMS" ]; then
        (cd "$SOURCES" && sha256sum --quiet -c SHA256SUMS) || die "tarballs in ${SOURCES} do not match SHA256SUMS"
    fi
}

cmd_install() {
    need_root
    local root="${1:-$DEFAULT_ROOT}" t0 stamp want buildlog
    t0=$(date +%s)
    check_sources
    want="$(wanted_stamp)"
    stamp="${root}/${STAMP_REL}"
    if [ -x "${root}${FS_PREFIX}/bin/freeswitch" ] && [ -r "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        if fs_version "$root" | grep -q "FreeSWITCH version: ${FS_VERSION}"; then
            log "FreeSWITCH ${FS_VERSION} already installed in ${root} from the same tarballs; nothing to do ($(($(date +%s) - t0))s)"
            return 0
        fi
        log "stamp matches but 'freeswitch -version' does not say ${FS_VERSION}; rebuilding"
    fi
    case "$(readlink -m "$root")" in
        / | /usr | /var | /var/tmp | /tmp | /root | /home) die "refusing to use ${root} as the chroot" ;;
    esac
    export DEBIAN_FRONTEND=noninteractive
    if ! command -v debootstrap >/dev/null 2>&1; then
        log "installing debootstrap on the host"
        apt-get "${APT_OPTS[@]}" update
        apt-get "${APT_OPTS[@]}" install -y --no-install-recommends debootstrap
    fi
    if [ -d "${root}/debootstrap" ]; then
        log "${root} holds an incomplete debootstrap; removing it"
        umount_proc "$root"
        umount_devpts "$root"
        rm -rf --one-file-system "$root"
    fi
    mkdir -p "$root"
    buildlog="${root}/var/tmp/pbxlink-fs-build.log"
    if [ ! -x "${root}/usr/bin/apt-get" ] || [ ! -e "${root}/var/lib/dpkg/status" ]; then
        log "debootstrap --variant=minbase bookworm ${root} (takes a few minutes)"
        debootstrap --variant=minbase bookworm "$root" "$DEBIAN_MIRROR"
    else
        log "base system already present in ${root}, skipping debootstrap"
    fi
    mkdir -p "${root}/var/tmp"
    : >"$buildlog"
    log "build log: ${buildlog}"
    [ -s "${root}/etc/resolv.conf" ] || cp -L /etc/resolv.conf "${root}/etc/resolv.conf"
    printf '#!/bin/sh\nexit 101\n' >"${root}/usr/sbin/policy-rc.d"
    chmod 755 "${root}/usr/sbin/policy-rc.d"
    mount_proc "$root"
    trap 'umount_proc "'"$root"'"' EXIT
    if [ ! -e "${root}/var/tmp/pbxlink-fs-deps-ok" ]; then
        log "installing Debian build dependencies into the chroot"
        chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" update >>"$buildlog" 2>&1
        chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y \
            --no-install-recommends "${BUILD_DEPS[@]}" >>"$buildlog" 2>&1 \
            || { tail -n 30 "$buildlog" >&2; die "apt-get install of the build dependencies failed"; }
        chroot "$root" apt-get clean
        touch "${root}/var/tmp/pbxlink-fs-deps-ok"
    fi
    local src="${root}/usr/src/pbxlink-fs"
    rm -rf "$src"
    mkdir -p "$src"
    for t in "${TARBALLS[@]}"; do
        log "unpacking ${t}"
        tar -xJf "${SOURCES}/${t}" -C "$src"
    done
    printf '%s\n' "${MODULES[@]}" >"${src}/freeswitch/modules.conf"
    log "building spandsp, sofia-sip and FreeSWITCH ${FS_VERSION} (make -j${JOBS}; several minutes)"
    if ! chroot "$root" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C JOBS="$JOBS" PKG_CONFIG_PATH=/usr/local/lib/pkgconfig \
        /bin/bash -euo pipefail -c '
            step() { printf "\n=== [fsrig] %s (%s)\n" "$1" "$(date -u +%H:%M:%S)"; }
            cd /usr/src/pbxlink-fs/spandsp
            step "spandsp"
            ./bootstrap.sh && ./configure --prefix=/usr/local && make -j"$JOBS" && make install && ldconfig
            cd /usr/src/pbxlink-fs/sofia-sip
            step "sofia-sip"
            ./bootstrap.sh && ./configure --prefix=/usr/local --with-glib=no --without-doxygen --disable-stun
            make -j"$JOBS" && make install && ldconfig
            cd /usr/src/pbxlink-fs/freeswitch
            step "freeswitch bootstrap"
            ./bootstrap.sh -j
            step "freeswitch configure"
            ./configure --disable-libvpx --disable-libyuv --enable-portable-binary --disable-dependency-tracking
            step "freeswitch make"
            make -j"$JOBS"
            step "freeswitch make install"
            make install
            ldconfig
            step "done"
        ' >>"$buildlog" 2>&1; then
        tail -n 40 "$buildlog" >&2
        die "build failed; see ${buildlog}"
    fi
    umount_proc "$root"
    trap - EXIT
    fs_version "$root" | grep -q "FreeSWITCH version: ${FS_VERSION}" \
        || die "installed freeswitch does not report version ${FS_VERSION}: $(fs_version "$root")"
    # Keep the vanilla config for reference; start replaces conf/.
    if [ ! -d "${root}${FS_PREFIX}/conf.dist" ]; then
        cp -a "${root}${FS_PREFIX}/conf" "${root}${FS_PREFIX}/conf.dist"
    fi
    rm -rf "$src"
    echo "$want" >"$stamp"
    log "installed $(fs_version "$root" | head -n1) in ${root} in $(($(date +%s) - t0))s"
    echo "=== [fsrig] install complete in $(($(date +%s) - t0))s" >>"$buildlog"
}

fs_pid() {
    local root="$1" pid
    [ -r "${root}${FS_PREFIX}/run/freeswitch.pid" ] || return 1
    pid="$(tr -dc '0-9' <"${root}${FS_PREFIX}/run/freeswitch.pid")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
        && [ "$(readlink "/proc/${pid}/root" 2>/dev/null || true)" = "$(readlink -f "$root")" ] \
        && echo "$pid"
}

fs_cli() {
    local root="$1"; shift
    chroot "$root" "${FS_PREFIX}/bin/fs_cli" -H "$ESL_HOST" -P "$ESL_PORT" -p "$ESL_PASSWORD" -T 5000 -t 10000 -x "$*"
}

is_running() {
    local root="$1"
    fs_pid "$root" >/dev/null || return 1
    fs_cli "$root" "status" 2>/dev/null | grep -q "UP"
}

cmd_stop() {
    need_root
    local root="${1:-$DEFAULT_ROOT}" pid i
    [ -d "$root" ] || { log "no rig at ${root}; nothing to stop"; return 0; }
    if pid="$(fs_pid "$root")"; then
        log "stopping freeswitch (pid ${pid})"
        fs_cli "$root" "fsctl shutdown" >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "freeswitch did not exit within ${STOP_TIMEOUT}s; SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
        fi
        log "freeswitch stopped"
    else
        log "freeswitch is not running"
    fi
    rm -f "${root}${FS_PREFIX}/run/freeswitch.pid"
    umount_proc "$root"
}

# start [DIR] [keep]: with "keep" the CDR files and logs stay (a restart mid-test).
cmd_start() {
    need_root
    local root="${1:-$DEFAULT_ROOT}" keep="${2:-}" t0 i pid
    t0=$(date +%s)
    [ -x "${root}${FS_PREFIX}/bin/freeswitch" ] || die "no freeswitch in ${root}; run: $0 install ${root}"
    [ -f "${CONF_SRC}/freeswitch.xml" ] || die "no ${CONF_SRC}/freeswitch.xml"
    if fs_pid "$root" >/dev/null; then
        log "freeswitch already running in ${root}; restarting it"
        cmd_stop "$root"
    fi
    mount_proc "$root"
    local conf="${root}${FS_PREFIX}/conf" logd="${root}${FS_PREFIX}/log"
    log "writing the rig's config into ${conf}"
    rm -rf "$conf"
    mkdir -p "$conf" "${root}${FS_PREFIX}/run" "${root}${FS_PREFIX}/db" "$logd/json_cdr" "$logd/cdr-csv"
    sed -e "s|@ESL_PORT@|${ESL_PORT}|g" -e "s|@ESL_PASSWORD@|${ESL_PASSWORD//&/\\&}|g" \
        "${CONF_SRC}/freeswitch.xml" >"${conf}/freeswitch.xml"
    if [ "$keep" != "keep" ]; then
        log "clearing old CDR files, logs and databases"
        find "$logd" -mindepth 1 -delete
        mkdir -p "$logd/json_cdr" "$logd/cdr-csv"
        rm -f "${root}${FS_PREFIX}"/db/*.db
        rm -rf "${root}${FS_PREFIX}"/recordings/*
    fi
    rm -f "${root}/dev/shm/pbxlink-fs-core.db"
    log "starting freeswitch (console log: ${logd}/rig-console.log)"
    local sql=(-nosql)
    [ "$FS_SQL" = 1 ] && sql=()
    setsid chroot "$root" "${FS_PREFIX}/bin/freeswitch" -nc -nonat "${sql[@]}" </dev/null >>"${logd}/rig-console.log" 2>&1 || true
    for ((i = 0; i < BOOT_TIMEOUT * 10; i++)); do
        if is_running "$root"; then break; fi
        sleep 0.1
    done
    is_running "$root" || { tail -n 40 "${logd}/freeswitch.log" >&2 2>/dev/null || true; die "freeswitch did not come up within ${BOOT_TIMEOUT}s"; }
    # both SIP profiles must be up
    for ((i = 0; i < 100; i++)); do
        [ "$(fs_cli "$root" "sofia status" | grep -cE '(internal|carrier) .*RUNNING')" -ge 2 ] && break
        sleep 0.1
    done
    log "$(fs_cli "$root" version | head -n1) up in $(($(date +%s) - t0))s; ESL on ${ESL_HOST}:${ESL_PORT}; SIP internal 127.0.0.1:25060, carrier 127.0.0.1:25080"
}

cmd_paths() {
    local root="${1:-$DEFAULT_ROOT}"
    echo "ROOT=${root}"
    echo "JSON_CDR_DIR=${root}${FS_PREFIX}/log/json_cdr"
    echo "CDR_CSV=${root}${FS_PREFIX}/log/cdr-csv/Master.csv"
    echo "FREESWITCH_LOG=${root}${FS_PREFIX}/log/freeswitch.log"
    echo "BUILD_LOG=${root}/var/tmp/pbxlink-fs-build.log"
    echo "ESL=${ESL_HOST}:${ESL_PORT}"
}

main() {
    local cmd="${1:-help}"
    [ $# -gt 0 ] && shift
    case "$cmd" in
        install) cmd_install "$@" ;;
        start) cmd_start "${1:-$DEFAULT_ROOT}" ;;
        stop) cmd_stop "$@" ;;
        restart) cmd_stop "${1:-$DEFAULT_ROOT}"; cmd_start "${1:-$DEFAULT_ROOT}" keep ;;
        status)
            local root="${1:-$DEFAULT_ROOT}"
            if is_running "$root"; then log "freeswitch is running"; else log "freeswitch is not running"; exit 1; fi
            ;;
        cli)
            need_root
            local root="$DEFAULT_ROOT"
            if [ $# -ge 2 ]; then root="$1"; shift; fi
            [ $# -eq 1 ] || die "usage: $0 cli [DIR] \"command\""
            fs_cli "$root" "$1"
            ;;
        cdr)
            local root="${1:-$DEFAULT_ROOT}"
            echo "== ${root}${FS_PREFIX}/log/cdr-csv/Master.csv"
            cat "${root}${FS_PREFIX}/log/cdr-csv/Master.csv" 2>/dev/null || true
            echo "== ${root}${FS_PREFIX}/log/json_cdr"
            ls -l "${root}${FS_PREFIX}/log/json_cdr" 2>/dev/null || true
            ;;
        paths) cmd_paths "$@" ;;
        help | -h | --help) usage ;;
        *) usage >&2; die "unknown command: ${cmd}" ;;
    esac
}

main "$@"
