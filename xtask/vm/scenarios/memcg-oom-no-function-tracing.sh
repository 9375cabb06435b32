# memcg-oom-no-function-tracing: memcg-oom with the agent capped below the full tier, as on
# kernels that refuse fentry and have no kprobes: without oom_kill_process, the victim must
# still be named and measured, from mark_victim's task or from the OOM killer's SIGKILL.

AGENT_ARGS="--max-tier no-function-tracing"
. /scenarios/memcg-oom.sh
