#!/usr/bin/env bash
# Runs the namespace-network test (cluster-tests/tests/netns.rs) inside a small
# virtual machine booted on Debian's own kernel, for machines whose kernel lacks
# traffic-control qdiscs (netem): it proves the latency the regions' links get.
#
#   scripts/netns-vm.sh            # root; downloads qemu, cpio, busybox and a kernel package
#
# The machine: the Debian kernel of linux-image-amd64, an initramfs holding busybox,
# ip, tc, iptables-legacy, the test binary and the libraries they load, and the
# kernel modules they need. It prints the measured round trips and the test result.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cas-target}"
[ "$(id -u)" -eq 0 ] || { echo "netns-vm: run as root" >&2; exit 2; }

apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  qemu-system-x86 busybox-static cpio iproute2 iptables >/dev/null

WORK="$(mktemp -d "${TMPDIR:-/tmp}/cas-netns-vm.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

echo "== kernel"
KPKG="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}' || true)"
[ -n "$KPKG" ] || { echo "netns-vm: no linux-image-amd64 package (Debian on x86-64 needed)" >&2; exit 2; }
(cd "$WORK" && apt-get download -q "$KPKG" >/dev/null && dpkg-deb -x ./*.deb k)
KVER="$(ls "$WORK/k/lib/modules")"

echo "== test binary"
TEST="$(cargo test --workspace --test netns --no-run --message-format=json \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "netns":
        print(m["executable"])' | tail -1)"
[ -n "$TEST" ] || { echo "netns-vm: the netns test did not build" >&2; exit 1; }

echo "== initramfs"
R="$WORK/root"
mkdir -p "$R"/{bin,sbin,proc,sys,dev,run,tmp,mods}
strip -o "$R/netns-test" "$TEST"
cp /bin/busybox "$R/bin/"
for a in sh mount id insmod uname poweroff; do ln -s busybox "$R/bin/$a"; done
cp /usr/sbin/ip /usr/sbin/tc /usr/sbin/xtables-legacy-multi "$R/sbin/"
ln -s xtables-legacy-multi "$R/sbin/iptables-legacy"
mkdir -p "$R/usr/lib/x86_64-linux-gnu"
cp -a /usr/lib/x86_64-linux-gnu/xtables "$R/usr/lib/x86_64-linux-gnu/"
for b in /usr/sbin/ip /usr/sbin/tc /usr/sbin/xtables-legacy-multi "$R/netns-test" \
         /usr/lib/x86_64-linux-gnu/xtables/libxt_standard.so; do
  ldd "$b" | grep -o '/[^ ]*'
done | sort -u | while read -r lib; do
  mkdir -p "$R$(dirname "$lib")"
  cp -L "$lib" "$R$lib"
done
MODS="llc stp bridge veth x_tables ip_tables iptable_filter sch_prio sch_netem cls_u32"
for m in $MODS; do
  cp "$(find "$WORK/k/lib/modules/$KVER" -name "$m.ko" | head -1)" "$R/mods/"
done
cat > "$R/init" <<INIT
#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys
mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /tmp; mount -t devtmpfs dev /dev
for m in $MODS; do insmod /mods/\$m.ko || echo "insmod \$m failed"; done
ip link set lo up
echo "== in the VM: kernel \$(uname -r)"
CAS_CLUSTER_NET=netns CAS_REQUIRE_NETEM=1 /netns-test --nocapture
echo "== netns test exit status \$?"
poweroff -f
INIT
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$WORK/initrd.gz")

echo "== boot (TCG emulation; about a minute)"
timeout 600 qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 1 -nographic -no-reboot \
  -kernel "$WORK/k/boot/vmlinuz-$KVER" -initrd "$WORK/initrd.gz" \
  -append "console=ttyS0 panic=-1 loglevel=3" | tee "$WORK/console.log" \
  | grep -E '^(==|test|running|thread|called|[a-z]+-[a-z]+-[0-9] →)' || true
grep -q "netns test exit status 0" "$WORK/console.log" \
  || { echo "netns-vm: the test failed in the VM (see above)" >&2; exit 1; }
