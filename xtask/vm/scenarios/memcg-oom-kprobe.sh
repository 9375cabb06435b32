# memcg-oom-kprobe: memcg-oom with oom_kill_process hooked by kprobe/kretprobe, as on kernels
# without BPF trampolines; the answers must be the same.

AGENT_ARGS="--function-hook kprobe"
. /scenarios/memcg-oom.sh
