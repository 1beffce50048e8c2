#!/usr/bin/env bash
# ipvs-vm.sh — boots a throw-away QEMU VM with a Debian kernel that has IPVS,
# and runs a test binary inside it. The host kernel may have no CONFIG_IP_VS
# (or no modules at all); the guest kernel is Debian's linux-image-cloud-amd64,
# downloaded with `apt-get download` and unpacked, never installed.
#
#   ipvs-vm.sh prepare            install the host tools (apt-get, root) and
#                                 build the kernel + base initramfs (cached)
#   ipvs-vm.sh run RUNDIR FILE... [-- GUESTCMD ARGS...]
#                                 boot with FILEs added under /test/, run
#                                 GUESTCMD as the test, power off. FILEs go
#                                 in without debug info; all but GUESTCMD's
#                                 own program also without symbols.
#
# RUNDIR receives console.log (ttyS0, the kernel and init), results.txt
# (ttyS1: KPT_* lines and the test's output), extra.cpio.gz and time.
# The guest writes KPT_EXIT=<status of GUESTCMD>; `run` exits 0 when the guest
# powered off by itself (whatever the test's status) and 99 when it did not.
#
# Userland in the guest is the host's own (busybox-static, iproute2, ipvsadm,
# ipset, iptables, conntrack and the libraries `ldd` finds), so a dynamically
# linked test binary built on this host runs there unchanged.
#
# Env: IPVS_VM_WORK (cache dir; default target/ipvs-vm next to this crate's
#      workspace), IPVS_VM_TIMEOUT (seconds, default 240), IPVS_VM_MEM (MiB,
#      default 256), IPVS_VM_CPUS (default 2), IPVS_VM_GUEST_ENV ("K=V K=V",
#      exported to GUESTCMD).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK="${IPVS_VM_WORK:-$here/../../target/ipvs-vm}"
# Host packages: QEMU and the initramfs tools, then the guest's userland.
HOST_PKGS=(qemu-system-x86 cpio kmod binutils busybox-static iproute2 ipvsadm ipset iptables nftables conntrack netbase)
# Guest modules; their dependencies come from `modprobe --show-depends`.
MODS=(ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_lblc ip_vs_lblcr ip_vs_sh ip_vs_dh
      ip_vs_sed ip_vs_nq ip_vs_mh ip_vs_ftp nf_conntrack nf_conntrack_netlink nf_nat dummy veth
      ip_set ip_set_hash_ip ip_set_hash_ipport ip_set_hash_ipportip ip_set_hash_ipportnet
      ip_set_hash_net ip_set_bitmap_port xt_ipvs ip_tables ip6_tables iptable_nat iptable_filter
      ip6table_nat ip6table_filter xt_set xt_mark xt_MASQUERADE xt_comment xt_conntrack xt_addrtype
      xt_tcpudp xt_multiport xt_statistic xt_nat xt_REDIRECT ipt_REJECT ip6t_REJECT
      nf_tables nft_compat nft_chain_nat sctp bridge br_netfilter xt_physdev
      # the iptables and nftables modes' SCTP scenarios run in the guest too
      xt_sctp xt_recent nft_ct nft_nat nft_masq nft_redir nft_numgen nft_hash nft_limit
      nft_fib_inet nft_fib_ipv4 nft_fib_ipv6 nft_reject_inet nft_reject_ipv4 nft_reject_ipv6)
BINS=(ip ipvsadm ipset conntrack xtables-legacy-multi xtables-nft-multi nft)

log() { echo "[ipvs-vm] $*" >&2; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

install_host_packages() {
  local missing=() p
  for p in "${HOST_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  [[ $(id -u) -eq 0 ]] || { log "missing host packages ${missing[*]} (run as root to install them)"; return 1; }
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The library files (resolved paths) an ELF needs, one per line.
libs_of() { ldd "$1" 2>/dev/null | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}'; }

# copy_libs DEST FILE: FILE's libraries under DEST, at their host paths.
copy_libs() {
  local l
  for l in $(libs_of "$2"); do mkdir -p "$1$(dirname "$l")"; cp -L "$l" "$1$l"; done
}
# copy_with_libs DEST FILE: FILE and its libraries under DEST, at the same paths.
copy_with_libs() { mkdir -p "$1$(dirname "$2")"; cp -L "$2" "$1$2"; copy_libs "$1" "$2"; }

cmd_prepare() {
  install_host_packages
  mkdir -p "$WORK"
  exec 9>"$WORK/.lock"; flock 9      # one build at a time; runs share the result
  local stamp="$WORK/base.stamp"
  if [[ -s "$WORK/base.cpio.gz" && -s "$WORK/vmlinuz" && "$stamp" -nt "${BASH_SOURCE[0]}" ]]; then
    return 0
  fi
  local t0 kpkg; t0=$(date +%s%N)
  kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
  if [[ -z "$kpkg" ]]; then apt-get update -qq; kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}'); fi
  [[ -n "$kpkg" ]] || { log "cannot resolve linux-image-cloud-amd64"; return 1; }
  mkdir -p "$WORK/debs"
  if ! ls "$WORK/debs/${kpkg}"_*.deb >/dev/null 2>&1; then
    rm -f "$WORK"/debs/*.deb
    ( cd "$WORK/debs" && apt-get download -q "$kpkg" 2>&1 | grep -v 'Download is performed unsandboxed' >&2 || true )
    ls "$WORK/debs/${kpkg}"_*.deb >/dev/null 2>&1 || { log "download of $kpkg failed"; return 1; }
  fi
  log "kernel package $kpkg ($(du -h "$WORK"/debs/*.deb | cut -f1)) ready after $(ms_since "$t0") ms"

  local root="$WORK/kernel" kver init="$WORK/initramfs"
  rm -rf "$root" "$init"; mkdir -p "$root"
  dpkg -x "$WORK"/debs/"${kpkg}"_*.deb "$root"
  kver=$(ls "$root/lib/modules" | head -1)
  cp "$root/boot/vmlinuz-$kver" "$WORK/vmlinuz"
  depmod -b "$root" "$kver"          # the .deb ships no modules.dep (its postinst makes it)

  mkdir -p "$init"/{bin,sbin,etc,proc,sys,dev,run,tmp,root,test,lib/modules,lib64,var/run}
  cp /bin/busybox "$init/bin/busybox"
  local a
  for a in $("$init/bin/busybox" --list); do
    # iproute2's ip, not busybox's (no netns, no veth); the real tools below win
    case "$a" in busybox|ip|ipvsadm|ipset|conntrack|iptables*|ip6tables*) continue ;; esac
    ln -sf busybox "$init/bin/$a"
  done
  local b path
  for b in "${BINS[@]}"; do
    path=$(PATH=/usr/sbin:/sbin:/usr/bin:/bin command -v "$b") || { log "host has no $b"; return 1; }
    copy_with_libs "$init" "$path"
    [[ "$path" == /sbin/$b || "$path" == /bin/$b ]] || ln -sf "$path" "$init/sbin/$b"
  done
  for b in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
    ln -sf "$(command -v xtables-legacy-multi)" "$init/sbin/${b/tables/tables-legacy}"
    ln -sf "$(command -v xtables-nft-multi)" "$init/sbin/${b/tables/tables-nft}"
    ln -sf "${b/tables/tables-legacy}" "$init/sbin/$b"     # plain iptables = legacy in the guest
  done
  # xtables extensions are dlopen()ed: the directory and what they link
  local xt=/usr/lib/x86_64-linux-gnu/xtables
  mkdir -p "$init$xt"; cp -a "$xt/." "$init$xt/"
  for f in "$xt"/*.so; do copy_with_libs "$init" "$f"; done
  cp /etc/protocols /etc/services "$init/etc/"   # "tcp" in ipset/iptables arguments
  echo 'root:x:0:0:root:/root:/bin/sh' >"$init/etc/passwd"

  # modules, dependencies first, each once
  : >"$init/lib/modules/load-order"
  local line m seen=" "
  while read -r line; do
    m=${line#insmod }; m=${m%% *}
    [[ "$seen" == *" $m "* ]] && continue; seen+="$m "
    # needs SSE4.2, which QEMU's TCG CPU lacks; the generic crc32c is built in
    [[ "$m" == */crc32c-intel.ko* ]] && continue
    case "$m" in
      *.ko) cp "$m" "$init/lib/modules/" ;;
      *.ko.xz) xz -dc "$m" >"$init/lib/modules/$(basename "${m%.xz}")" ;;
      *.ko.zst) zstd -qdc "$m" >"$init/lib/modules/$(basename "${m%.zst}")" ;;
      *) log "unexpected module file $m"; return 1 ;;
    esac
    m=$(basename "$m"); echo "${m%.ko*}.ko" >>"$init/lib/modules/load-order"
  done < <(for m in "${MODS[@]}"; do
             modprobe -d "$root" -S "$kver" --show-depends "$m" | grep '^insmod ' || { log "module $m not found"; exit 1; }
           done)
  write_init "$init"
  ( cd "$init" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1 ) >"$WORK/base.cpio.gz"
  rm -rf "$root"
  touch "$stamp"
  log "base initramfs: $(du -h "$WORK/base.cpio.gz" | cut -f1) gz, $(du -sh "$init" | cut -f1) unpacked," \
      "kernel $kver, $(wc -l <"$init/lib/modules/load-order") modules; built in $(ms_since "$t0") ms"
}

write_init() {
  cat >"$1/init" <<'INIT'
#!/bin/sh
# PID 1 in the guest. ttyS1 is the results channel (a file on the host).
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs run /run; mount -t tmpfs tmp /tmp
# what udev would add to /dev (`nft -f /dev/stdin`)
ln -sf /proc/self/fd /dev/fd; ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout; ln -sf /proc/self/fd/2 /dev/stderr
R=/dev/ttyS1
say() { echo "$*" >$R; }
say "KPT_BOOTED uptime=$(cut -d' ' -f1 /proc/uptime)"
for m in $(cat /lib/modules/load-order); do insmod /lib/modules/$m 2>/dev/null || say "KPT_INSMOD_FAIL=$m"; done
/sbin/ip link set lo up
say "KPT_MODULES_LOADED uptime=$(cut -d' ' -f1 /proc/uptime)"
if [ -x /test/run ]; then
  say "KPT_TEST_START uptime=$(cut -d' ' -f1 /proc/uptime)"
  /test/run >$R 2>&1 </dev/null
  say "KPT_EXIT=$?"
fi
say "KPT_DONE uptime=$(cut -d' ' -f1 /proc/uptime)"
sync; poweroff -f
INIT
  chmod +x "$1/init"
}

cmd_run() {
  [[ $# -ge 1 ]] || { log "usage: run RUNDIR FILE... [-- CMD ARGS...]"; return 2; }
  local run="$1"; shift
  local files=() cmd=()
  while [[ $# -gt 0 ]]; do
    if [[ "$1" == -- ]]; then shift; cmd=("$@"); break; fi
    files+=("$1"); shift
  done
  [[ -s "$WORK/base.cpio.gz" ]] || { log "run 'ipvs-vm.sh prepare' first"; return 1; }
  rm -rf "$run"; mkdir -p "$run/extra/test"
  local f
  local main=""; [[ ${#cmd[@]} -gt 0 ]] && main=$(basename "${cmd[0]}")
  for f in "${files[@]}"; do
    # without debug info: a debug binary is tens of MB, and the guest
    # unpacks the initramfs into its RAM. The command's own program keeps
    # its symbols (backtraces); the other files lose them too.
    local strip=--strip-all; [[ "$(basename "$f")" == "$main" ]] && strip=--strip-debug
    strip "$strip" -o "$run/extra/test/$(basename "$f")" "$f" 2>/dev/null || cp "$f" "$run/extra/test/"
    copy_libs "$run/extra" "$f"            # libraries the base may lack (e.g. libgcc_s)
  done
  if [[ ${#cmd[@]} -gt 0 ]]; then
    { echo '#!/bin/sh'
      for f in ${IPVS_VM_GUEST_ENV:-}; do printf 'export %q\n' "$f"; done
      printf 'exec'; printf ' %q' "${cmd[@]}"; echo
    } >"$run/extra/test/run"
    chmod +x "$run/extra/test/run"
  fi
  # a second cpio after the base: the kernel unpacks both
  ( cd "$run/extra" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1 ) >"$run/extra.cpio.gz"
  cat "$WORK/base.cpio.gz" "$run/extra.cpio.gz" >"$run/initrd.gz"
  local t0 rc=0; t0=$(date +%s%N)
  # 2 vCPUs: multi-threaded TCG runs them on 2 host threads (the
  # conformance tier runs 2 scenarios at once)
  timeout "${IPVS_VM_TIMEOUT:-240}" qemu-system-x86_64 -accel tcg,thread=multi,tb-size=64 \
    -m "${IPVS_VM_MEM:-256}" -smp "${IPVS_VM_CPUS:-2}" \
    -nodefaults -no-user-config -display none -nic none -no-reboot \
    -kernel "$WORK/vmlinuz" -initrd "$run/initrd.gz" \
    -append "console=ttyS0 quiet loglevel=4 panic=-1" \
    -serial "file:$run/console.log" -serial "file:$run/results.txt" >"$run/qemu.out" 2>&1 || rc=$?
  echo "$(ms_since "$t0")" >"$run/wall_ms"
  rm -f "$run/initrd.gz"
  if ! grep -q '^KPT_DONE' "$run/results.txt" 2>/dev/null; then
    log "guest did not finish (qemu exit $rc); console tail:"; tail -20 "$run/console.log" >&2; cat "$run/qemu.out" >&2
    return 99
  fi
}

case "${1:-}" in
  prepare) cmd_prepare ;;
  run) shift; cmd_run "$@" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
esac
