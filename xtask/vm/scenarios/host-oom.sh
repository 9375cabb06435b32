# host-oom: no cgroup limits at all. A steady "db" holds most of the memory; a "builder" in
# another cgroup allocates until the whole guest runs out. The kernel kills the db, the bigger
# one, and the builder is the trigger (checked by xtask/src/vm/scenario/host_oom.rs).

. /scenarios/lib.sh

make_cgroup db max
make_cgroup builder max

start_agent

available_mib=$(($(grep MemAvailable /proc/meminfo | tr -s ' ' | cut -d' ' -f2) / 1024))
db_mib=$((available_mib * 60 / 100))
# Together they need more than there is; at the moment of the OOM the builder holds less than
# the db, so the db is the one chosen. Once it is gone, the builder gets to its cap and exits.
builder_mib=$((available_mib * 55 / 100))
fact available_mib $available_mib

spawn_hog db --max-mib $db_mib --hold
db=$hog
fact db_pid $db
# The db reports `held N MiB` on stdout once it holds its working set.
release_hog $db
wait_until "[ \$(grep VmRSS /proc/$db/status | tr -s ' ' | cut -d' ' -f2) -ge $((db_mib * 1024 * 9 / 10)) ]" 60 || exit 1

spawn_hog builder --max-mib $builder_mib
builder=$hog
fact builder_pid $builder
release_hog $builder
wait $builder
fact builder_status $?
wait $db
fact db_status $?

stop_agent
