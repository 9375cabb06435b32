# oom-group: a cgroup v2 with memory.oom.group=1 and five processes. When one of them outgrows
# the limit, the kernel kills all five in one invocation: one incident, five victims (checked by
# xtask/src/vm/scenario/oom_group.rs).

. /scenarios/lib.sh

make_cgroup oomtrace-group 64M
echo 1 >/sys/fs/cgroup/oomtrace-group/memory.oom.group || exit 1
fact memcg_id "$(stat -c %i /sys/fs/cgroup/oomtrace-group)"

start_agent

# Four steady members holding 4 MiB each, and one that grows until the limit.
members=
for n in 1 2 3 4; do
	spawn_hog oomtrace-group --max-mib 4 --hold
	release_hog $hog
	members="$members $hog"
done
wait_until '[ "$(grep -c . /sys/fs/cgroup/oomtrace-group/cgroup.procs)" -eq 4 ] &&
	[ "$(grep "^anon " /sys/fs/cgroup/oomtrace-group/memory.stat | cut -d" " -f2)" -ge 16777216 ]' 30 || exit 1
spawn_hog oomtrace-group --max-mib 256
grower=$hog
members="$members $grower"
fact grower_pid $grower
fact member_pids "$(echo $members | tr ' ' ',')"
release_hog $grower

statuses=
for pid in $members; do
	wait $pid
	statuses="$statuses $?"
done
fact member_statuses "$(echo $statuses | tr ' ' ',')"

stop_agent
