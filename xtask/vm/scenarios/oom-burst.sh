# oom-burst: a cgroup v2 with memory.oom.group=1 and N member processes (kernel command line
# `oomtrace.burst=N`, 100 by default), all OOM-killed at once in one invocation of the OOM
# killer. N - 1 members hold 1 MiB each; the last one grows until the limit. What the agent
# captured, what it dropped and what the kernel log kept are compared by
# xtask/src/vm/scenario/oom_burst.rs and by `cargo xtask bench`.
#
# `oomtrace.peer=bcc` or `oomtrace.peer=bpftrace` also runs bcc's `oomkill` or bpftrace's
# `oomkill.bt` next to the agent (only the initramfs of xtask/src/vm/peers.rs holds them): its
# attach time, idle memory and output come out as facts and the sections peer-out, peer-log and
# peer-status.

. /scenarios/lib.sh

members_wanted=100
agent_args=
peer=
for word in $(cat /proc/cmdline); do
	case "$word" in
	oomtrace.burst=*) members_wanted="${word#*=}" ;;
	oomtrace.agent_args=*) agent_args="$(echo "${word#*=}" | tr , ' ')" ;;
	oomtrace.peer=*) peer="${word#*=}" ;;
	esac
done
fact members_wanted $members_wanted

group=/sys/fs/cgroup/oomtrace-burst
make_cgroup oomtrace-burst max
echo 1 >$group/memory.oom.group || exit 1
fact memcg_id "$(stat -c %i $group)"

# shellcheck disable=SC2086
start_agent $agent_args
memory_status $agent >"$OUT/agent-status"
if [ -n "$peer" ]; then
	start_peer "$peer"
fi

# The holders start inside the group: this shell joins it, forks them, and leaves again (the
# root cgroup takes processes back), so that no holder allocates anything outside the group.
holders=$((members_wanted - 1))
members=
echo $$ >$group/cgroup.procs || exit 1
n=0
while [ $n -lt $holders ]; do
	oomtrace-hog --max-mib 1 --hold --no-wait >/dev/null &
	members="$members $!"
	n=$((n + 1))
done
echo $$ >/sys/fs/cgroup/cgroup.procs || exit 1
fact spawn_seconds_at "$(cut -d' ' -f1 /proc/uptime)"

# Every holder in the group and its MiB charged; then a limit a little above what they hold.
wait_until "[ \$(grep -c . $group/cgroup.procs) -eq $holders ] &&
	[ \$(grep '^anon ' $group/memory.stat | cut -d' ' -f2) -ge $((holders * 1048576)) ]" 300 || {
	fact holders_ready timeout
	exit 1
}
current=$(cat $group/memory.current)
echo $((current + 8 * 1048576)) >$group/memory.max || exit 1
fact memory_current_before $current

spawn_hog oomtrace-burst --max-mib 256
grower=$hog
members="$members $grower"
fact grower_pid $grower
fact member_pids "$(echo $members | tr ' ' ',')"
fact kill_seconds_at "$(cut -d' ' -f1 /proc/uptime)"
release_hog $grower

killed=0
others=0
for pid in $members; do
	wait $pid
	if [ $? -eq 137 ]; then
		killed=$((killed + 1))
	else
		others=$((others + 1))
	fi
done
fact members_killed $killed
fact members_not_killed $others
fact memory_events "$(tr '\n' ',' <$group/memory.events)"

if [ -n "$peer" ]; then
	stop_peer
fi
memory_status $agent >"$OUT/agent-status-after"
stop_agent
