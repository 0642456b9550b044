#!/bin/sh
# Entrypoint of the covid-sweep GPU image.
#
#   (no arguments) or options   ->  wandb agent [--count $WANDB_AGENT_COUNT] [OPTIONS] "$SWEEP_ID"
#   covid-sweep ARGS...         ->  covid-sweep ARGS...            (e.g. the embedded controller)
#   SUBCOMMAND ARGS...          ->  covid-sweep SUBCOMMAND ARGS... (sweep, status, export-best, ...)
#   covid-sweep-agent | wandb | python | python3 | sh | bash ARGS...  ->  run as given
#
# WANDB_API_KEY comes only from the container's environment. This script never prints it and never
# traces itself (set +x), even when started with `sh -x`.
set +x
set -eu

case "${1-}" in
    covid-sweep | covid-sweep-agent | wandb | python | python3 | sh | bash)
        exec "$@"
        ;;
    "" | -*)
        ;; # the W&B agent, below
    *)
        # Any other word is a covid-sweep subcommand; click answers "No such command" for a typo.
        exec covid-sweep "$@"
        ;;
esac

if [ -z "${SWEEP_ID:-}" ]; then
    cat >&2 <<'EOF'
covid-sweep image: SWEEP_ID is not set.
  W&B agents: create the sweep once with `wandb sweep sweeps/bayes.yaml` and pass the id it prints
  (ENTITY/PROJECT/SWEEP_ID) as SWEEP_ID, e.g. `SWEEP_ID=... docker compose -f docker/compose.yaml up -d`.
  Air-gapped: give a covid-sweep command instead, e.g. `sweep /app/sweeps/bayes.yaml --data /data`.
EOF
    exit 2
fi

if [ -z "${WANDB_API_KEY:-}" ] && [ ! -f "${HOME:-/nonexistent}/.netrc" ]; then
    echo "covid-sweep image: WANDB_API_KEY is not set; export it on the host (see \`wandb login\`) so compose passes it through." >&2
    exit 2
fi

if [ -n "${WANDB_AGENT_COUNT:-}" ]; then
    case "$WANDB_AGENT_COUNT" in
        *[!0-9]*) count_ok=no ;;
        *) if [ "$WANDB_AGENT_COUNT" -ge 1 ]; then count_ok=yes; else count_ok=no; fi ;;
    esac
    if [ "$count_ok" = no ]; then
        echo "covid-sweep image: WANDB_AGENT_COUNT must be a positive integer, got '$WANDB_AGENT_COUNT'." >&2
        exit 2
    fi
    set -- --count "$WANDB_AGENT_COUNT" "$@"
fi

exec wandb agent "$@" "$SWEEP_ID"
