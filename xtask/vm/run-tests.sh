#!/bin/sh
# oomtrace's guest runner: runs the suite's statically linked test binaries one after another
# and reports each on stdout, between markers the host reads from the serial console. The
# kernel matrix's initramfs (xtask/vm/init.sh) runs it; so can any guest that has the suite's
# directory and a POSIX shell (busybox sh, dash). xtask/src/vm/runner.rs describes the
# interface and parses the output.
#
# usage: run-tests.sh SUITE_DIR TIMEOUT_SECONDS TEST[:FILTER]...
#
# SUITE_DIR holds bin/oomtrace (the agent), bin/oomtrace-hog and tests/NAME (the test
# binaries). Each TEST is a test binary's name, with a libtest filter after a colon if only some
# of its tests should run. Each binary runs for at most TIMEOUT_SECONDS.
#
# The tests get the caller's environment (e.g. the bench's OOMTRACE_BURST_MEMBERS) and:
#   OOMTRACE_BIN, OOMTRACE_STATIC_BIN   SUITE_DIR/bin/oomtrace
#   OOMTRACE_HOG, OOMTRACE_STATIC_HOG   SUITE_DIR/bin/oomtrace-hog
#   OOMTRACE_HISTORY_DIR                a fresh directory under /tmp
#   OOMTRACE_DISPOSABLE_MACHINE=1       the guest may run out of memory as a whole
#   RUST_TEST_THREADS=1, RUST_BACKTRACE=1
#
# Output: `@@OOMTRACE-KERNEL RELEASE@@` (uname -r) first; then for each TEST:
#   @@OOMTRACE-TEST-BEGIN NAME@@
#   what the binary printed (stdout and stderr, with --nocapture)
#   @@OOMTRACE-TEST-END NAME STATUS SECONDS@@
# STATUS is its exit status (127: no such binary; 124 or 143: over its time), SECONDS its run
# time. `@@OOMTRACE-DONE@@` follows the last one.

suite=$1
limit=$2
shift 2

export OOMTRACE_BIN="$suite/bin/oomtrace"
export OOMTRACE_STATIC_BIN="$OOMTRACE_BIN"
export OOMTRACE_HOG="$suite/bin/oomtrace-hog"
export OOMTRACE_STATIC_HOG="$OOMTRACE_HOG"
export OOMTRACE_HISTORY_DIR=/tmp/oomtrace-test-history
export OOMTRACE_DISPOSABLE_MACHINE=1
export RUST_TEST_THREADS=1
export RUST_BACKTRACE=1
mkdir -p "$OOMTRACE_HISTORY_DIR"
echo "@@OOMTRACE-KERNEL $(uname -r)@@"

seconds_up() {
	cut -d' ' -f1 /proc/uptime
}

for test in "$@"; do
	name=${test%%:*}
	filter=
	[ "$name" = "$test" ] || filter=${test#*:}
	echo "@@OOMTRACE-TEST-BEGIN $name@@"
	started=$(seconds_up)
	if [ -x "$suite/tests/$name" ]; then
		# shellcheck disable=SC2086 # no filter is no argument
		(cd /tmp && timeout "$limit" "$suite/tests/$name" --nocapture $filter 2>&1)
		status=$?
	else
		echo "no test binary $suite/tests/$name"
		status=127
	fi
	took=$(awk "BEGIN { printf \"%.1f\", $(seconds_up) - $started }")
	echo "@@OOMTRACE-TEST-END $name $status $took@@"
done
echo "@@OOMTRACE-DONE@@"
