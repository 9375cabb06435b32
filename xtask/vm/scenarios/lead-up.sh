# lead-up: the minute before a kill, on cgroup v2. In one parent limit a steady member holds
# 24 MiB while a grower climbs until the limit kills it: the kill's timeline shows the grower
# rising and the steady member flat. Then two kills 0.4 s apart under the same limit: two
# invocations of the OOM killer, each with a snapshot of its own (checked by
# xtask/src/vm/scenario/lead_up.rs).

. /scenarios/lib.sh

make_cgroup oomtrace-lead 128M
echo +memory >/sys/fs/cgroup/oomtrace-lead/cgroup.subtree_control || exit 1
mkdir /sys/fs/cgroup/oomtrace-lead/steady /sys/fs/cgroup/oomtrace-lead/grower || exit 1

start_agent

spawn_hog oomtrace-lead/steady --max-mib 24 --hold
steady=$hog
release_hog $steady
wait_until '[ "$(cat /sys/fs/cgroup/oomtrace-lead/steady/memory.current)" -ge 25165824 ]' 30 || exit 1
# The steady member's level is recorded for a while before the growth starts.
sleep 3
spawn_hog oomtrace-lead/grower --mib-per-second 16 --max-mib 512
grower=$hog
fact grower_pid $grower
release_hog $grower
wait $grower
fact grower_status $?

spawn_hog oomtrace-lead/grower --max-mib 512
first=$hog
release_hog $first
wait $first
fact first_status $?
sleep 0.4
spawn_hog oomtrace-lead/grower --max-mib 512
second=$hog
release_hog $second
wait $second
fact second_status $?
fact first_pid $first
fact second_pid $second

kill $steady
wait $steady
stop_agent
