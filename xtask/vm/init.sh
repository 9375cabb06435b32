#!/bin/busybox sh
# /init of oomtrace's kernel matrix (`cargo xtask vm`, xtask/src/vm/): mounts what the agent and
# the tests need, runs the test binaries the kernel command line names with the guest runner
# (/suite/run-tests.sh), and powers off.
#
# Kernel command line: oomtrace.tests=NAME[:FILTER],... for the runner, each binary for at most
# oomtrace.timeout=SECONDS; every oomtrace.env.KEY=VALUE is exported to the tests.

/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup

# From here on the console carries the runner's output only: kernel messages (an OOM kill's
# among them) would land in the middle of a test's. The tests read the kernel log themselves.
dmesg -n 1
echo "@@OOMTRACE-INIT@@"

tests=
timeout=300
for word in $(cat /proc/cmdline); do
	case "$word" in
	oomtrace.tests=*) tests=$(echo "${word#*=}" | tr , ' ') ;;
	oomtrace.timeout=*) timeout=${word#*=} ;;
	oomtrace.env.*=*) export "${word#oomtrace.env.}" ;;
	esac
done

# shellcheck disable=SC2086 # one word per test
sh /suite/run-tests.sh /suite "$timeout" $tests

# Let the serial port drain what is still queued for it before the machine goes away.
sleep 0.5
poweroff -f
