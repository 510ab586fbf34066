#!/usr/bin/env bash
# The exclusion test through the Rust API (dlm-locksh on the dlm crate): DLM_CLUSTER_LIB=rust (tests/common.sh).
DLM_CLUSTER_LIB=rust exec bash "$(dirname "$0")/exclusion.sh"
