# memcg-oom: one process outgrows its cgroup v2 memory.max and is OOM-killed, with the agent
# running (checked by xtask/src/vm/scenario/memcg_oom.rs). $AGENT_ARGS, when set by a variant
# of this scenario, goes to the agent.

. /scenarios/lib.sh

make_cgroup oomtrace-vm 64M
fact memcg_id "$(stat -c %i /sys/fs/cgroup/oomtrace-vm)"

# What `oomtrace check` says with the same options, before anything is attached: it must be
# what `run` then reports.
# shellcheck disable=SC2086 # word splitting is the point
oomtrace check --format json ${AGENT_ARGS:-} >"$OUT/check-json" 2>"$OUT/check-log"
fact check_status $?

# shellcheck disable=SC2086 # word splitting is the point
start_agent ${AGENT_ARGS:-}

spawn_hog oomtrace-vm --max-mib 256
fact hog_pid $hog
release_hog $hog
wait $hog
fact hog_status $?

stop_agent
