#!/bin/busybox sh
# /init of oomtrace's test VMs (`cargo xtask vm`, xtask/src/vm/). It mounts what the agent
# needs, runs the scenario named on the kernel command line, prints the files the scenario left
# in /out as sections between markers for the host to parse (the protocol is described in
# xtask/src/vm/scenario.rs), and powers off.
#
# Kernel command line: oomtrace.scenario=NAME runs /scenarios/NAME.sh, for at most
# oomtrace.timeout=SECONDS, so that a hung scenario's sections still come out.

/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup

# From here on the console carries sections only: kernel messages (an OOM kill's among them)
# would land in the middle of one. The scenario's kernel log is collected with dmesg instead.
dmesg -n 1
echo "@@OOMTRACE-INIT@@"

scenario=
timeout=120
for word in $(cat /proc/cmdline); do
	case "$word" in
	oomtrace.scenario=*) scenario="${word#*=}" ;;
	oomtrace.timeout=*) timeout="${word#*=}" ;;
	esac
done

export OUT=/out
mkdir -p "$OUT"
{
	echo "kernel=$(uname -r)"
	echo "scenario=$scenario"
	echo "uptime_at_init=$(cut -d' ' -f1 /proc/uptime)"
} >>"$OUT/facts"

if [ -f "/scenarios/$scenario.sh" ]; then
	(cd "$OUT" && timeout "$timeout" sh "/scenarios/$scenario.sh")
	status=$?
else
	echo "no scenario /scenarios/$scenario.sh" >"$OUT/init-error"
	status=127
fi

{
	echo "scenario_status=$status"
	echo "uptime_at_end=$(cut -d' ' -f1 /proc/uptime)"
} >>"$OUT/facts"
dmesg >"$OUT/kmsg"

for section in "$OUT"/*; do
	echo "@@OOMTRACE-BEGIN ${section##*/}@@"
	# awk ends a last line that lacks its newline, so the END marker stays on its own line.
	awk 1 "$section"
	echo "@@OOMTRACE-END ${section##*/}@@"
done
echo "@@OOMTRACE-DONE@@"

# Let the serial port drain what is still queued for it before the machine goes away.
sleep 0.5
poweroff -f
