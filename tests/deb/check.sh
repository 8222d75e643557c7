#!/usr/bin/env bash
# Checks the .deb the way a user meets it: lintian, then `dpkg -i` into a fresh Debian 12
# root (debootstrap minbase + systemd, not running), the user, files, modes and conffiles, an
# upgrade that keeps local edits and pending rows, remove (data kept), purge (nothing left),
# and the unit with systemd-analyze (verify, security --offline).
#
#   tests/deb/check.sh [target/debian/pbxlink_<version>_amd64.deb]
#
# Root only (debootstrap, chroot). The pristine root is made once and kept in
# /var/tmp/pbxlink-deb-base; every run installs into a fresh copy of it.
set -euo pipefail
cd "$(dirname "$0")/../.."

deb=${1:-$(ls -t target/debian/pbxlink_*_amd64.deb | head -n1)}
base=/var/tmp/pbxlink-deb-base
max_exposure=2.0

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
[ "$(id -u)" -eq 0 ] || fail "needs root (debootstrap, chroot)"
[ -f "$deb" ] || fail "no package: $deb"
echo "package: $deb ($(stat -c %s "$deb") bytes)"

# --- lintian: no error, and no warning but the ones listed here (tag and the file it names,
# exactly) with the reason each is acceptable for this package. Any other E: or W: fails;
# I:, P:, N: lines are printed only.
allowed_warnings=(
  # cargo-deb writes the changelog of a package that is not uploaded to Debian: there is no
  # ITP bug to close.
  'initial-upload-closes-no-bugs [usr/share/doc/pbxlink/changelog.Debian.gz:1]'
  # The config holds the LeadSquared access and secret keys: 0640 root:pbxlink on purpose
  # (checked below), not world-readable.
  'non-standard-file-perm 0640 != 0644 [etc/pbxlink/pbxlink.toml]'
)
lintian_out=$(lintian --allow-root "$deb" 2>&1) || lintian_rc=$?
echo "${lintian_out:-lintian: clean}"
# lintian exits 1 both for error tags and for a package it could not open ("Skipping ...",
# "No packages selected"): a package it did not check must not pass as clean.
dpkg-deb --info "$deb" >/dev/null || fail "$deb is not a readable Debian package"
[ "${lintian_rc:-0}" -le 1 ] || fail "lintian could not run (exit ${lintian_rc})"
if grep -qE '^(Skipping |No packages selected)' <<<"$lintian_out"; then
  fail "lintian did not check $deb"
fi
unexpected=$(while IFS= read -r line; do
  case "$line" in
    E:*) echo "$line" ;;
    W:*)
      rest=${line#W: pbxlink: }
      found=0
      for a in "${allowed_warnings[@]}"; do [ "$rest" = "$a" ] && found=1; done
      [ "$found" = 1 ] || echo "$line"
      ;;
  esac
done <<<"$lintian_out")
[ -z "$unexpected" ] || fail "lintian reported errors or warnings not in allowed_warnings: $unexpected"
ok "lintian: no errors, no warnings but the ${#allowed_warnings[@]} allowed ones"

# --- the shipped config is the example with the URL left empty (so the service waits)
# (packaging/pbxlink.toml = a 6-line header + examples/pbxlink.toml with call_log_url = "")
diff <(sed 's|^call_log_url = .*|call_log_url = ""|' examples/pbxlink.toml) \
  <(tail -n +7 packaging/pbxlink.toml | sed 's|^call_log_url = .*|call_log_url = ""|') \
  || fail "packaging/pbxlink.toml drifted from examples/pbxlink.toml (only call_log_url may differ)"
grep -q '^call_log_url = ""' packaging/pbxlink.toml || fail "packaging/pbxlink.toml must leave call_log_url empty"
ok "packaging/pbxlink.toml = examples/pbxlink.toml with an empty call_log_url"

# --- the unit, from the host
unit=systemd/pbxlink.service
command -v systemd-analyze >/dev/null || apt-get install -y -qq --no-install-recommends systemd
security=$(systemd-analyze security --offline=yes --no-pager "$unit" 2>&1) || fail "security: $security"
exposure=$(sed -n 's/.*Overall exposure level for pbxlink.service: \([0-9.]*\).*/\1/p' <<<"$security")
[ -n "$exposure" ] || fail "no exposure figure in: $security"
awk -v e="$exposure" -v m="$max_exposure" 'BEGIN { exit !(e <= m) }' \
  || fail "exposure $exposure > $max_exposure"
ok "systemd-analyze security --offline=yes: exposure $exposure (<= $max_exposure)"

# --- a fresh root
# (minbase plus systemd, installed but not running, like a Debian 12 server seen from a chroot)
if [ ! -x "$base/usr/lib/systemd/systemd" ]; then
  echo "creating the pristine Debian 12 root $base (debootstrap minbase + systemd, once)"
  rm -rf "$base.tmp"
  debootstrap --variant=minbase --include=systemd,systemd-sysv bookworm "$base.tmp" \
    >/var/tmp/pbxlink-deb-base.log 2>&1 || { tail -20 /var/tmp/pbxlink-deb-base.log; fail "debootstrap"; }
  rm -rf "$base"
  mv "$base.tmp" "$base"
fi
root=$(mktemp -d /var/tmp/pbxlink-deb-test.XXXXXX)
trap 'rm -rf "$root"' EXIT
cp -a "$base/." "$root/"
in_root() { chroot "$root" "$@"; }
cp "$deb" "$root/tmp/pbxlink.deb"
# A PBX box: Asterisk's group exists before pbxlink is installed.
in_root groupadd --system asterisk

# --- install (no systemd running in a chroot: enabled, not started, no failure)
out=$(in_root dpkg -i /tmp/pbxlink.deb 2>&1) || { echo "$out"; fail "dpkg -i"; }
echo "$out" | sed 's/^/  dpkg: /'
grep -q "NOT started" <<<"$out" || fail "postinst did not say the service waits for the config"
grep -q "leadsquared.call_log_url: is required" <<<"$out" || fail "postinst did not show why"
ok "dpkg -i into a fresh bookworm root; postinst explains the service waits for the config"

# --- user, groups, files, modes, conffiles
IFS=: read -r _ _ _ _ _ home shell <<<"$(in_root getent passwd pbxlink)" || fail "no user pbxlink"
[ "$shell" = /usr/sbin/nologin ] || fail "pbxlink shell is $shell"
[ ! -e "$root$home" ] || fail "pbxlink has a home $home"
in_root id -nG pbxlink | tr ' ' '\n' | grep -qx asterisk || fail "pbxlink not in group asterisk"
ok "system user pbxlink: shell $shell, no home ($home), in group asterisk"

owner() { in_root stat -c '%a %U:%G' "$1"; }
[ "$(owner /etc/pbxlink/pbxlink.toml)" = "640 root:pbxlink" ] \
  || fail "/etc/pbxlink/pbxlink.toml is $(owner /etc/pbxlink/pbxlink.toml)"
[ "$(owner /var/lib/pbxlink)" = "750 pbxlink:pbxlink" ] || fail "/var/lib/pbxlink is $(owner /var/lib/pbxlink)"
[ "$(owner /usr/bin/pbxlink)" = "755 root:root" ] || fail "/usr/bin/pbxlink is $(owner /usr/bin/pbxlink)"
for f in /usr/lib/systemd/system/pbxlink.service /usr/share/doc/pbxlink/README.md \
  /usr/share/doc/pbxlink/examples/pbxlink.toml /usr/share/doc/pbxlink/copyright; do
  [ -f "$root$f" ] || fail "missing $f"
done
cmp -s "$root/usr/lib/systemd/system/pbxlink.service" "$unit" || fail "installed unit differs from $unit"
[ -L "$root/etc/systemd/system/multi-user.target.wants/pbxlink.service" ] || fail "unit not enabled"
ok "files and modes: pbxlink.toml 640 root:pbxlink, /var/lib/pbxlink 750, unit installed and enabled"

# --- man pages and completions (generated from the CLI by packaging/build-deb.sh), monitoring
man1=$root/usr/share/man/man1
[ "$(owner /usr/share/man/man1/pbxlink.1.gz)" = "644 root:root" ] \
  || fail "/usr/share/man/man1/pbxlink.1.gz is $(owner /usr/share/man/man1/pbxlink.1.gz)"
page=$(MANWIDTH=120 man -l "$man1/pbxlink.1.gz" 2>&1) || fail "man -l pbxlink.1.gz: $page"
grep -qE '^ *pbxlink +- +Connects +an +Asterisk' <<<"$page" || fail "pbxlink(1) has no NAME line: $page"
for cmd in run check-config demo status dead-letter import; do
  grep -q "pbxlink-$cmd(1)" <<<"$page" || fail "pbxlink(1) does not list pbxlink-$cmd(1)"
  sub=$(MANWIDTH=120 man -l "$man1/pbxlink-$cmd.1.gz" 2>&1) || fail "man -l pbxlink-$cmd.1.gz: $sub"
  grep -qE "^ *pbxlink-$cmd +- +" <<<"$sub" || fail "pbxlink-$cmd(1) has no NAME line"
done
grep -q -- '--config' <(MANWIDTH=120 man -l "$man1/pbxlink-import.1.gz") || fail "pbxlink-import(1) lacks --config"
bash_completion=$root/usr/share/bash-completion/completions/pbxlink
zsh_completion=$root/usr/share/zsh/vendor-completions/_pbxlink
[ "$(owner /usr/share/bash-completion/completions/pbxlink)" = "644 root:root" ] || fail "bash completion mode"
[ "$(owner /usr/share/zsh/vendor-completions/_pbxlink)" = "644 root:root" ] || fail "zsh completion mode"
complete_words() { # the words bash completes after "pbxlink $*"
  bash -c 'source "$1"; shift; COMP_WORDS=(pbxlink "$@" ""); COMP_CWORD=$(($# + 1)); _pbxlink pbxlink "" "${COMP_WORDS[COMP_CWORD-1]}"; printf "%s\n" "${COMPREPLY[@]}"' \
    _ "$bash_completion" "$@"
}
top=$(complete_words) || fail "the bash completion script does not run"
for cmd in run check-config demo status dead-letter import; do
  grep -qx "$cmd" <<<"$top" || fail "bash completion of 'pbxlink ' lacks $cmd: $top"
done
! grep -qxE 'manpage|completions' <<<"$top" || fail "bash completion offers the hidden build commands"
complete_words dead-letter | grep -qx retry-all || fail "bash completion of 'pbxlink dead-letter ' lacks retry-all"
[ "$(head -n1 "$zsh_completion")" = "#compdef pbxlink" ] || fail "zsh completion does not start with #compdef pbxlink"
if command -v zsh >/dev/null; then zsh -n "$zsh_completion" || fail "zsh -n $zsh_completion"; fi
cmp -s "$root/usr/share/pbxlink/prometheus/pbxlink-rules.yml" packaging/prometheus/pbxlink-rules.yml \
  || fail "installed Prometheus rules differ from packaging/prometheus/pbxlink-rules.yml"
cmp -s "$root/usr/share/pbxlink/grafana/pbxlink-dashboard.json" packaging/grafana/pbxlink-dashboard.json \
  || fail "installed Grafana dashboard differs from packaging/grafana/pbxlink-dashboard.json"
ok "man pages pbxlink(1) and pbxlink-<command>(1) render; bash completion completes the commands; zsh completion; /usr/share/pbxlink/{prometheus,grafana}"

help=$(in_root /usr/bin/pbxlink --help) || fail "pbxlink --help"
for cmd in run check-config demo status dead-letter import; do
  grep -qE "^  $cmd " <<<"$help" || fail "--help does not list $cmd"
done
ok "/usr/bin/pbxlink --help lists every subcommand"

conffiles=$(in_root dpkg-query --showformat='${Conffiles}\n' --show pbxlink)
grep -q "^ /etc/pbxlink/pbxlink.toml [0-9a-f]\{32\}$" <<<"$conffiles" || fail "conffiles: $conffiles"
ok "conffiles:$conffiles"

# --- upgrade (same version again): local edits and pending rows survive
in_root sed -i 's|^call_log_url = .*|call_log_url = "http://127.0.0.1:9/1/api/Telephony/LogCallComplete/k"|' \
  /etc/pbxlink/pbxlink.toml
in_root sed -i 's|^cdr_csv = .*|cdr_csv = "/var/tmp/Master.csv"|' /etc/pbxlink/pbxlink.toml
in_root /usr/bin/pbxlink check-config >/dev/null || fail "edited config is invalid"
printf '%s\n' '"","+919611700001","918044556677","from-trunk","""Lead"" <+919611700001>","PJSIP/airtel-00000001","PJSIP/100-00000002","Dial","PJSIP/100,30","2025-01-02 03:04:05","2025-01-02 03:04:10","2025-01-02 03:05:05",60,55,"ANSWERED","DOCUMENTATION","1700000000.1",""' \
  >"$root/var/tmp/old.csv"
in_root /usr/bin/pbxlink import /var/tmp/old.csv >/dev/null 2>&1 || fail "pbxlink import"
in_root chown -R pbxlink:pbxlink /var/lib/pbxlink
pending() { in_root /usr/bin/pbxlink status --json 2>/dev/null | sed -n 's/^  "pending": \([0-9]*\),/\1/p'; }
[ "$(pending)" = 1 ] || fail "expected 1 pending row before the upgrade"
out=$(in_root dpkg -i /tmp/pbxlink.deb 2>&1) || { echo "$out"; fail "upgrade"; }
grep -q "systemd is not running" <<<"$out" || { echo "$out"; fail "upgrade postinst output"; }
grep -q '127.0.0.1:9' "$root/etc/pbxlink/pbxlink.toml" || fail "upgrade lost the local edit"
[ "$(owner /etc/pbxlink/pbxlink.toml)" = "640 root:pbxlink" ] || fail "upgrade changed the config's mode"
[ "$(pending)" = 1 ] || fail "upgrade lost the pending row"
ok "upgrade keeps the edited conffile (640 root:pbxlink) and the pending outbox row"

# --- the unit against the installed root
verify=$(systemd-analyze verify --root="$root" /usr/lib/systemd/system/pbxlink.service 2>&1) \
  || { echo "$verify"; fail "systemd-analyze verify"; }
[ -z "$verify" ] || { echo "$verify"; fail "systemd-analyze verify printed warnings"; }
ok "systemd-analyze verify --root (installed unit, binary present): clean"

# --- remove keeps data and config; purge leaves nothing
in_root dpkg -r pbxlink >/dev/null 2>&1 || fail "dpkg -r"
[ ! -e "$root/usr/bin/pbxlink" ] || fail "remove left /usr/bin/pbxlink"
[ -f "$root/var/lib/pbxlink/pbxlink.db" ] || fail "remove deleted the outbox"
[ -f "$root/etc/pbxlink/pbxlink.toml" ] || fail "remove deleted the config"
in_root getent passwd pbxlink >/dev/null || fail "remove deleted the user"
ok "dpkg -r: binary gone; outbox, config and user kept"
in_root dpkg --purge pbxlink >/dev/null 2>&1 || fail "dpkg --purge"
for p in /var/lib/pbxlink /etc/pbxlink /etc/systemd/system/multi-user.target.wants/pbxlink.service; do
  [ ! -e "$root$p" ] && [ ! -L "$root$p" ] || fail "purge left $p"
done
! in_root getent passwd pbxlink >/dev/null || fail "purge left the user"
! in_root getent group pbxlink >/dev/null || fail "purge left the group"
rm -f "$root/tmp/pbxlink.deb" "$root/var/tmp/old.csv" "$root/var/tmp/Master.csv"
left=$(cd "$root" && find . -xdev -name '*pbxlink*' -not -path './proc/*' 2>/dev/null | head)
[ -z "$left" ] || fail "purge left: $left"
ok "dpkg --purge: no pbxlink file, directory, user or group left"

# --- a booted systemd (systemd-nspawn); with PBXLINK_REQUIRE_BOOT=1 (.ci/run) a machine that
# cannot boot one fails instead of skipping
tests/deb/boot.sh "$deb"

echo "deb check passed: $(stat -c %s "$deb") bytes, exposure $exposure"
