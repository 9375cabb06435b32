#!/bin/bash
# The runner of the whole-system guest (`cargo xtask vm --system`, xtask/src/vm/system/): the
# image's oomtrace-guest-run.service mounts the payload disk and runs this from it, as root,
# once systemd, Docker, containerd and podman are up.
#
# It deploys the agent as the payload's `plan` says (the systemd unit from deploy/, or the
# container image), runs the test binaries the plan names, and writes what happened to the
# second serial port in the section protocol of the initramfs guests (xtask/src/vm/scenario.rs):
# every file left in $OUT becomes a section, `facts` holds key=value lines, and
# `@@OOMTRACE-DONE@@` ends the report. The unit powers the machine off when this ends.

set -u
PAYLOAD=$(dirname "$(readlink -f "$0")")
REPORT=/dev/ttyS1
export OUT=/run/oomtrace-out
mkdir -p "$OUT"

# The kernel's OOM reports would land on the console in the middle of the boot log; they are
# collected with dmesg instead.
dmesg -n 1

fact() { echo "$1=$2" >>"$OUT/facts"; }
uptime_now() { cut -d' ' -f1 /proc/uptime; }

# The plan: DEPLOYMENT (unit or image), IMAGE (the agent's image tag), TESTS (test binaries in
# tests/), TEST_TIMEOUT (seconds per binary), PROGRAM_LINKS (`programs/N:PATH`: the crate's
# programs, which the tests start by the path they were built at), and the tests' environment.
# shellcheck source=/dev/null
. "$PAYLOAD/plan"

fact kernel "$(uname -r)"
fact scenario "system-$DEPLOYMENT"
fact uptime_at_init "$(uptime_now)"
fact cgroup_fs "$(stat -f -c %T /sys/fs/cgroup)"
fact perf_event_paranoid "$(cat /proc/sys/kernel/perf_event_paranoid)"
fact systemd_state "$(systemctl is-system-running)"
# When userspace began and each runtime was up, in seconds since the kernel started.
seconds() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000000 }'; }
fact userspace_at "$(seconds "$(systemctl show --value --property UserspaceTimestampMonotonic)")"
for unit in docker.service containerd.service podman.socket; do
	fact "unit.$unit" "$(systemctl is-active "$unit")"
	fact "unit.$unit.active_at" \
		"$(seconds "$(systemctl show --value --property ActiveEnterTimestampMonotonic "$unit")")"
done

# The agent, deployed as a user deploys it.
deploy_unit() {
	# Debian's kernels default to kernel.perf_event_paranoid=3, which their own patch makes
	# refuse perf_event_open (and so attaching tracepoints) to all but CAP_SYS_ADMIN; 2 is the
	# mainline default, under which the unit's CAP_PERFMON suffices (deploy/oomtrace.service).
	echo 'kernel.perf_event_paranoid = 2' >/etc/sysctl.d/60-oomtrace.conf
	sysctl --quiet --load /etc/sysctl.d/60-oomtrace.conf
	install -m 0755 "$PAYLOAD/bin/oomtrace" /usr/local/bin/oomtrace
	install -m 0644 "$PAYLOAD/deploy/oomtrace.service" /etc/systemd/system/oomtrace.service
	systemctl daemon-reload
	systemctl enable --now oomtrace.service
}

deploy_image() {
	docker load --input "$PAYLOAD/image.tar" >"$OUT/image-load" 2>&1 || return
	# Docker 20.10 knows neither CAP_BPF nor CAP_PERFMON: CAP_SYS_ADMIN in their place, as
	# docs/deploy.md says.
	local bpf_caps="--cap-add=BPF --cap-add=PERFMON"
	case "$(docker version --format '{{.Server.Version}}')" in
	20.*) bpf_caps="--cap-add=SYS_ADMIN" ;;
	esac
	docker run --detach --name oomtrace --restart=on-failure \
		--pid=host --cgroupns=host --read-only --security-opt=no-new-privileges \
		--security-opt=seccomp="$PAYLOAD/deploy/seccomp.json" \
		--cap-drop=ALL $bpf_caps --cap-add=SYS_RESOURCE --cap-add=SYSLOG \
		-v /sys/kernel/btf:/sys/kernel/btf:ro \
		-v /sys/kernel/tracing:/sys/kernel/tracing:ro \
		-v /sys/fs/cgroup:/sys/fs/cgroup:ro \
		-v /var/lib/docker/containers:/var/lib/docker/containers:ro \
		-v oomtrace-history:/var/lib/oomtrace \
		"$IMAGE" run --format json --runtime-state-only
}

# Whether the agent said it attached: its log line, in the journal or the container's log.
agent_log() {
	case "$DEPLOYMENT" in
	unit) journalctl --unit oomtrace.service --output cat --no-pager ;;
	image) docker logs oomtrace 2>&1 ;;
	esac
}

case "$DEPLOYMENT" in
unit) deploy_unit >"$OUT/deploy" 2>&1 ;;
image) deploy_image >"$OUT/deploy" 2>&1 ;;
*) echo "unknown deployment $DEPLOYMENT" >"$OUT/deploy" && false ;;
esac
deploy_status=$?
fact deploy_status $deploy_status
fact deployed_after "$(uptime_now)"

# Ready once it logged that it attached (its programs see every kill from then on), for at
# most a minute: each look at the journal takes a while under emulation.
ready=no
ready_by=$((SECONDS + 60))
while [ "$deploy_status" = 0 ] && [ $SECONDS -lt $ready_by ]; do
	if agent_log | grep -qE 'attached; capture tier|"kind":"agent_started"'; then
		ready=yes
		break
	fi
	sleep 0.5
done
fact agent_ready "$ready"
fact agent_ready_at "$(uptime_now)"

for link in $PROGRAM_LINKS; do
	mkdir -p "$(dirname "${link#*:}")"
	ln -sf "$PAYLOAD/${link%%:*}" "${link#*:}"
done

# Each test binary in a directory of its own, with the plan's environment and a time limit.
for test in $TESTS; do
	dir=/var/tmp/oomtrace-tests/$test
	mkdir -p "$dir"
	(cd "$dir" && timeout "$TEST_TIMEOUT" "$PAYLOAD/tests/$test" --show-output --test-threads=1) \
		>"$OUT/test-$test" 2>&1
	fact "test.$test.status" $?
done

# The agent as the user sees it: the unit's state and journal, or the container's.
case "$DEPLOYMENT" in
unit)
	fact agent_state "$(systemctl is-active oomtrace.service)"
	systemctl status --no-pager --lines 0 oomtrace.service >"$OUT/agent-status" 2>&1
	;;
image)
	fact agent_state "$(docker inspect --format '{{.State.Status}}' oomtrace 2>/dev/null || echo absent)"
	;;
esac
agent_log >"$OUT/agent-log"

fact uptime_at_end "$(uptime_now)"
# `scenario_status`, as the initramfs guests report it: whether every step above succeeded.
status=0
grep -q '^deploy_status=0$' "$OUT/facts" || status=1
grep '^test\..*\.status=' "$OUT/facts" | grep -qv '=0$' && status=1
fact scenario_status "$status"
dmesg >"$OUT/kmsg"

{
	for section in "$OUT"/*; do
		echo "@@OOMTRACE-BEGIN ${section##*/}@@"
		# awk ends a last line that lacks its newline, so the END marker stays on its own line.
		awk 1 "$section"
		echo "@@OOMTRACE-END ${section##*/}@@"
	done
	echo "@@OOMTRACE-DONE@@"
} >"$REPORT"
# Closing a serial port waits for what it still holds to go out; the unit powers off next.
echo "oomtrace-guest-run: report written (scenario_status=$status); powering off"
