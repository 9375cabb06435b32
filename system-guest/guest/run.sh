#!/bin/bash
# The whole-system guest's part of a test boot (`cargo xtask vm --system`,
# system-guest/src/): the image's oomtrace-guest-run.service mounts the payload disk and runs
# this from it, as root, once systemd, Docker, containerd and podman are up.
#
# It deploys the agent as the payload's `plan` says (the systemd unit from deploy/, or the
# container image), then hands over to the suite's runner (suite/run-tests.sh, the same as the
# kernel matrix's guests run), whose output goes to the second serial port. Around it, what the
# host checks of the system itself, as `@@OOMTRACE-FACT key=value@@` lines, and for whoever
# reads a failed boot's report the agent's log and the kernel's, between
# `@@OOMTRACE-SECTION-BEGIN name@@` and `@@OOMTRACE-SECTION-END name@@`.
# `@@OOMTRACE-SYSTEM-DONE@@` ends the report; the unit powers the machine off when this ends.

set -u
PAYLOAD=$(dirname "$(readlink -f "$0")")
REPORT=/dev/ttyS1
exec 3>"$REPORT"

# The kernel's OOM reports would land on the console in the middle of the boot log; they go
# into the report's kmsg section instead.
dmesg -n 1

fact() { echo "@@OOMTRACE-FACT $1=$2@@" >&3; }
uptime_now() { cut -d' ' -f1 /proc/uptime; }
section() {
	echo "@@OOMTRACE-SECTION-BEGIN $1@@"
	# awk ends a last line that lacks its newline, so the END marker stays on its own line.
	awk 1
	echo "@@OOMTRACE-SECTION-END $1@@"
} >&3

# The plan: DEPLOYMENT (unit or image), IMAGE (the agent's image tag) and run_tests (the suite
# runner's command line).
# shellcheck source=/dev/null
. "$PAYLOAD/plan"

fact uptime_at_init "$(uptime_now)"
fact cgroup_fs "$(stat -f -c %T /sys/fs/cgroup)"
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
	install -m 0755 "$PAYLOAD/suite/bin/oomtrace" /usr/local/bin/oomtrace
	install -m 0644 "$PAYLOAD/deploy/oomtrace.service" /etc/systemd/system/oomtrace.service
	install -m 0644 "$PAYLOAD/deploy/oomtrace.catalog" /usr/lib/systemd/catalog/oomtrace.catalog
	journalctl --update-catalog
	systemctl daemon-reload
	systemctl enable --now oomtrace.service
}

deploy_image() {
	docker load --input "$PAYLOAD/image.tar" || return
	# Docker 20.10 knows neither CAP_BPF nor CAP_PERFMON: CAP_SYS_ADMIN in their place, as
	# docs/deploy.md says.
	local bpf_caps="--cap-add=BPF --cap-add=PERFMON"
	case "$(docker version --format '{{.Server.Version}}')" in
	20.*) bpf_caps="--cap-add=SYS_ADMIN" ;;
	esac
	# shellcheck disable=SC2086 # two options or one
	docker run --detach --name oomtrace --restart=on-failure \
		--pid=host --cgroupns=host --read-only --security-opt=no-new-privileges \
		--security-opt=seccomp="$PAYLOAD/deploy/seccomp.json" \
		--cap-drop=ALL $bpf_caps --cap-add=SYS_RESOURCE --cap-add=SYSLOG \
		--device=/dev/kmsg \
		-v /sys/kernel/btf:/sys/kernel/btf:ro \
		-v /sys/kernel/tracing:/sys/kernel/tracing:ro \
		-v /sys/fs/cgroup:/sys/fs/cgroup:ro \
		-v /var/lib/docker/containers:/var/lib/docker/containers:ro \
		-v oomtrace-history:/var/lib/oomtrace \
		"$IMAGE" run --format json --runtime-state-only
}

# The agent's own log, in the journal or the container's log.
agent_log() {
	case "$DEPLOYMENT" in
	unit) journalctl --unit oomtrace.service --output cat --no-pager ;;
	image) docker logs oomtrace 2>&1 ;;
	esac
}

case "$DEPLOYMENT" in
unit) deploy_unit >/run/oomtrace-deploy.log 2>&1 ;;
image) deploy_image >/run/oomtrace-deploy.log 2>&1 ;;
*) echo "unknown deployment $DEPLOYMENT" >/run/oomtrace-deploy.log && false ;;
esac
deploy_status=$?
fact deploy_status $deploy_status
section deploy </run/oomtrace-deploy.log

# Ready once it said it attached (its programs see every kill from then on), for at most a
# minute: each look at the journal takes a while under emulation.
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

# The suite, as every guest runs it; the deployed agent runs beside the tests' own.
run_tests >&3 2>&1

# The agent as the user sees it at the end: the unit's state, or the container's.
case "$DEPLOYMENT" in
unit) fact agent_state "$(systemctl is-active oomtrace.service)" ;;
image) fact agent_state "$(docker inspect --format '{{.State.Status}}' oomtrace 2>/dev/null || echo absent)" ;;
esac
fact uptime_at_end "$(uptime_now)"
agent_log | section agent-log
dmesg | section kmsg
echo "@@OOMTRACE-SYSTEM-DONE@@" >&3
# Closing a serial port waits for what it still holds to go out; the unit powers off next.
exec 3>&-
echo "oomtrace-guest-run: report written; powering off"
