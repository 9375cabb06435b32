# memcg-oom: one process outgrows its cgroup v2 memory.max and is OOM-killed, with the agent
# running. Sections left in $OUT: facts, agent-json, agent-log (checked by
# xtask/src/vm/scenario/memcg_oom.rs).

set -u
cgroup=/sys/fs/cgroup/oomtrace-vm

fact() {
	echo "$1=$2" >>"$OUT/facts"
}

# Tries `$1` (a command) every 0.1 s for up to `$2` seconds.
wait_until() {
	tries=$(($2 * 10))
	until eval "$1"; do
		tries=$((tries - 1))
		[ "$tries" -gt 0 ] || return 1
		sleep 0.1
	done
}

echo +memory >/sys/fs/cgroup/cgroup.subtree_control || exit 1
mkdir "$cgroup" || exit 1
echo 64M >"$cgroup/memory.max" || exit 1
# There is no swap in the guest; should the kernel ever get some, the hog must not use it.
if [ -e "$cgroup/memory.swap.max" ]; then
	echo 0 >"$cgroup/memory.swap.max" || exit 1
fi
fact memcg_id "$(stat -c %i "$cgroup")"

oomtrace run --format json >"$OUT/agent-json" 2>"$OUT/agent-log" &
agent=$!
# Under emulation the agent takes a few seconds to read the kernel's BTF and load.
if ! wait_until 'grep -q "\"kind\":\"agent_started\"" "$OUT/agent-json" || ! kill -0 $agent' 60; then
	fact agent_start timeout
	exit 1
fi
if ! kill -0 $agent 2>/dev/null; then
	wait $agent
	fact agent_status $?
	fact agent_start exited
	exit 1
fi

# The hog waits for a byte on stdin: it joins the cgroup before it allocates anything.
mkfifo /tmp/hog-start
oomtrace-hog --max-mib 256 </tmp/hog-start &
hog=$!
fact hog_pid $hog
echo $hog >"$cgroup/cgroup.procs" || exit 1
echo x >/tmp/hog-start
wait $hog
fact hog_status $?

# The kill's record is in the ring buffer by now; give the agent a moment to write it, then
# stop it: it writes everything captured before agent_stopped.
sleep 1
kill -TERM $agent
wait $agent
fact agent_status $?
