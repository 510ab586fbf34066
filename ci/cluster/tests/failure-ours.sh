#!/usr/bin/env bash
# The failure test through dlm-rs's libdlm (libdlm_lt.so.3 / libdlm.so.3): DLM_CLUSTER_LIB=ours (tests/common.sh).
DLM_CLUSTER_LIB=ours exec bash "$(dirname "$0")/failure.sh"
