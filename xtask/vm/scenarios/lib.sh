# Shared by the scenario scripts: sourced, never run. Each scenario leaves in $OUT the sections
# facts, agent-json and agent-log (xtask/src/vm/scenario.rs describes the protocol).

set -u

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

# Makes cgroup v2 `$1` under the root, with memory.max `$2` (or `max`) and no swap.
make_cgroup() {
	grep -q memory /sys/fs/cgroup/cgroup.subtree_control ||
		echo +memory >/sys/fs/cgroup/cgroup.subtree_control || exit 1
	mkdir "/sys/fs/cgroup/$1" || exit 1
	echo "$2" >"/sys/fs/cgroup/$1/memory.max" || exit 1
	if [ -e "/sys/fs/cgroup/$1/memory.swap.max" ]; then
		echo 0 >"/sys/fs/cgroup/$1/memory.swap.max" || exit 1
	fi
}

# Starts the agent with extra arguments `$@`, waits until it has attached, and sets $agent.
# Like a production deployment it opts out of the OOM killer's choice.
start_agent() {
	oomtrace run --format json "$@" >"$OUT/agent-json" 2>"$OUT/agent-log" &
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
	# The agent protects itself (oom_score_adj -1000): checked, not set, here.
	fact agent_oom_score_adj "$(cat "/proc/$agent/oom_score_adj")"
}

# Stops the agent: it writes everything captured before agent_stopped, then exits.
stop_agent() {
	# The last kill's records are in the ring buffer by now; let the agent write them first.
	sleep 1
	kill -TERM $agent
	wait $agent
	fact agent_status $?
}

# Starts a hog in cgroup `$1` with arguments `$2…`, held until `release_hog`; sets $hog.
# The hog waits for a byte on stdin, so it joins the cgroup before it allocates anything.
spawn_hog() {
	cgroup=$1
	shift
	fifo=/tmp/hog-start-$$-$RANDOM
	mkfifo "$fifo"
	oomtrace-hog "$@" <"$fifo" >/dev/null &
	hog=$!
	echo $hog >"/sys/fs/cgroup/$cgroup/cgroup.procs" || exit 1
	eval "hog_fifo_$hog=$fifo"
}

release_hog() {
	eval "echo x >\$hog_fifo_$1"
}

# The memory lines of /proc/<pid>/status.
memory_status() {
	grep -E '^(VmRSS|VmHWM|RssAnon|RssFile|RssShmem):' "/proc/$1/status"
}

# Starts peer `$1` and waits for the line it prints once its probe is attached (bcc compiles its
# program first, which takes a while under emulation); sets $peer_pid. A peer that cannot start
# ends the scenario early but without failing it: its log says why, and the bench reports that.
start_peer() {
	# Both tools look for tracing files under debugfs as well.
	mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
	fact peer_name "$1"
	fact peer_spawn_at "$(cut -d' ' -f1 /proc/uptime)"
	case "$1" in
	bcc)
		PYTHONUNBUFFERED=1 python3 /usr/sbin/oomkill-bpfcc >"$OUT/peer-out" 2>"$OUT/peer-log" &
		ready='Tracing OOM kills'
		;;
	bpftrace)
		bpftrace -B line /usr/sbin/oomkill.bt >"$OUT/peer-out" 2>"$OUT/peer-log" &
		ready='Tracing oom_kill_process'
		;;
	*)
		fact peer_start "unknown peer $1"
		exit 1
		;;
	esac
	peer_pid=$!
	if ! wait_until "grep -q '$ready' '$OUT/peer-out' || ! kill -0 $peer_pid 2>/dev/null" 900; then
		fact peer_start timeout
		stop_agent
		exit 0
	fi
	if ! kill -0 $peer_pid 2>/dev/null; then
		wait $peer_pid
		fact peer_status $?
		fact peer_start exited
		stop_agent
		exit 0
	fi
	fact peer_ready_at "$(cut -d' ' -f1 /proc/uptime)"
	fact peer_start ok
	memory_status $peer_pid >"$OUT/peer-status"
}

# Lets the peer print the last kill, then ends it (SIGINT is ignored by background jobs of a
# shell without job control; both peers write each line as it comes).
stop_peer() {
	sleep 1
	kill -TERM $peer_pid
	wait $peer_pid
	fact peer_status $?
}
