#!/usr/bin/env bash
# Bare-kernel boot baseline for the benchmark: boots the guest kernel RUNS times (default 5) with
# the engine's QEMU flags and an initramfs whose /init (a static busybox script) only writes one
# line to the virtio-serial port named boxlite.agent, then answers 60 lines from the host, each
# after a fork+exec of busybox `true` (the floor of an exec round trip: a line each way over the
# channel and the guest's own fork+exec, no protocol of ours), then writes 20 MiB of zeros (the
# raw channel's throughput), and reboots. Prints each boot's wall time from spawning qemu to the
# host reading that line, then, as the last stdout line, JSON:
#   {"baseline_boot_ms":{"p50":..,"min":..,"max":..,"runs":N},"raw_channel_mb_per_s":{"p50":..},
#    "exec_floor_ms":{"p50":..}}
# Usage: boot-baseline.sh [VMLINUX] [RUNS]   (VMLINUX defaults to the output of build-kernel.sh)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
script="$here/$(basename "${BASH_SOURCE[0]}")"
cache="${BOXLITE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/boxlite}/boot-baseline"

"$here/install-deps.sh"
vmlinux=${1:-$("$here/build-kernel.sh" | tail -n1)}
runs=${2:-5}
[ -f "$vmlinux" ] || { echo "boot-baseline: no kernel at $vmlinux" >&2; exit 1; }

# The initramfs depends only on this script and the busybox binary.
initrd="$cache/initrd-$(cat "$script" /bin/busybox | sha256sum | cut -c1-12).cpio"
if [ ! -f "$initrd" ]; then
  mkdir -p "$cache"
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys"
  cp /bin/busybox "$root/bin/"
  for applet in sh mount cat cut dd reboot seq true; do ln -s busybox "$root/bin/$applet"; done
  cat >"$root/init" <<'INIT'
#!/bin/sh
mount -t devtmpfs dev /dev
mount -t sysfs sys /sys
mount -t proc proc /proc
for port in /sys/class/virtio-ports/*; do
  [ "$(cat "$port/name")" = boxlite.agent ] || continue
  exec 3<>"/dev/${port##*/}"
  echo "boxlite-baseline uptime=$(cut -d' ' -f1 /proc/uptime)" >&3
  for i in $(seq 60); do read -r line <&3; /bin/true; echo ok >&3; done
  dd if=/dev/zero bs=64k count=320 >&3 2>/dev/null
done
# Triple-fault reboot (reboot=t); with -no-reboot that ends qemu.
reboot -f
INIT
  chmod 0755 "$root/init"
  # Uncompressed, as the engine ships its initramfs: decompressing costs time under TCG.
  (cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$initrd.tmp"
  mv "$initrd.tmp" "$initrd"
  rm -rf "$root"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
qemu-img create -q -f qcow2 "$work/disk.qcow2" 64M

python3 - "$vmlinux" "$initrd" "$work" "$runs" <<'PY'
import json, os, socket, statistics, subprocess, sys, time

vmlinux, initrd, work, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sock_path = os.path.join(work, "agent.sock")
TIMEOUT_S = 120
STREAM_BYTES = 20 << 20
PINGS, WARMUP_PINGS = 60, 10

def qemu_cmd(log):
    return [
        "qemu-system-x86_64",
        "-M", "microvm,x-option-roms=off,isa-serial=on,rtc=on,acpi=off",
        "-accel", "tcg,thread=multi", "-cpu", "max,erms=off,fsrm=off", "-m", "256", "-smp", "1",
        "-nographic", "-no-reboot", "-nodefaults", "-serial", f"file:{log}",
        "-kernel", vmlinux, "-initrd", initrd,
        # The engine's TCG CPU and timer argument (core/runtime/src/engine/qemu.rs; it also
        # passes the host's TSC rate, measured in Rust).
        "-append", "console=ttyS0 quiet reboot=t panic=-1 lapic_timer_khz=1000000",
        "-device", "virtio-serial-device",
        "-chardev", f"socket,path={sock_path},server=on,wait=off,id=c0",
        "-device", "virtserialport,chardev=c0,name=boxlite.agent",
        "-drive", f"file={os.path.join(work, 'disk.qcow2')},if=none,id=d0,format=qcow2",
        "-device", "virtio-blk-device,drive=d0",
    ]

def fail(msg, proc, log):
    proc.kill()
    proc.wait()
    tail = open(log, errors="replace").read()[-2000:] if os.path.exists(log) else ""
    sys.exit(f"boot-baseline: {msg}\nqemu stderr:\n{proc.stderr.read()}\nconsole:\n{tail}")

def boot(i):
    log = os.path.join(work, f"console-{i}.log")
    if os.path.exists(sock_path):
        os.unlink(sock_path)
    start = time.monotonic()
    proc = subprocess.Popen(qemu_cmd(log), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    # qemu creates the socket a few ms after spawn; the guest needs far longer to write to it.
    conn = socket.socket(socket.AF_UNIX)
    while True:
        try:
            conn.connect(sock_path)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            if proc.poll() is not None or time.monotonic() - start > TIMEOUT_S:
                fail("qemu did not open the agent socket", proc, log)
            time.sleep(0.002)
    conn.settimeout(TIMEOUT_S)
    buf = b""
    while b"\n" not in buf:
        chunk = conn.recv(256)
        if not chunk:
            fail("guest closed the port before writing a line", proc, log)
        buf += chunk
    ready_ms = (time.monotonic() - start) * 1000
    line, buf = buf.split(b"\n", 1)
    rtts = []
    for n in range(PINGS):
        t0 = time.monotonic()
        conn.sendall(b"x\n")
        while not buf.startswith(b"ok\n"):
            chunk = conn.recv(256)
            if not chunk:
                fail(f"guest closed the port after {n} of {PINGS} exec round trips", proc, log)
            buf += chunk
        buf = buf[3:]
        if n >= WARMUP_PINGS:
            rtts.append((time.monotonic() - t0) * 1000)
    streamed, t0 = len(buf), time.monotonic()
    while streamed < STREAM_BYTES:
        chunk = conn.recv(1 << 16)
        if not chunk:
            fail(f"guest closed the port after {streamed} of {STREAM_BYTES} bytes", proc, log)
        streamed += len(chunk)
    mb_per_s = STREAM_BYTES / 1e6 / (time.monotonic() - t0)
    try:
        proc.wait(TIMEOUT_S)
    except subprocess.TimeoutExpired:
        fail("guest did not reboot (qemu still running)", proc, log)
    exit_ms = (time.monotonic() - start) * 1000
    if proc.returncode != 0:
        fail(f"qemu exited with {proc.returncode}", proc, log)
    floor = statistics.median(rtts)
    print(f"boot {i + 1}: {ready_ms:.0f} ms to line ({line.decode()}), exec floor {floor:.2f} ms, "
          f"20 MiB at {mb_per_s:.0f} MB/s, qemu exited at {exit_ms:.0f} ms", flush=True)
    return ready_ms, mb_per_s, floor

samples = [boot(i) for i in range(runs)]
times, rates, floors = [s[0] for s in samples], [s[1] for s in samples], [s[2] for s in samples]
print(json.dumps({"baseline_boot_ms": {"p50": round(statistics.median(times)), "min": round(min(times)),
                                       "max": round(max(times)), "runs": runs},
                  "raw_channel_mb_per_s": {"p50": round(statistics.median(rates), 1),
                                           "min": round(min(rates), 1), "max": round(max(rates), 1)},
                  "exec_floor_ms": {"p50": round(statistics.median(floors), 2),
                                    "min": round(min(floors), 2), "max": round(max(floors), 2)}}))
PY
