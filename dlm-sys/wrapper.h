/*
 * The single list of Linux DLM UAPI headers that dlm-rs is built against
 * (Debian/Ubuntu package linux-libc-dev).
 *
 * Two consumers read this file, so they always see the same declarations:
 *   - build.rs runs bindgen on it to generate the Rust bindings;
 *   - build/probe.rs compiles tests/abi/probe.c, which includes it, to
 *     measure the C layout that tests/abi_layout.rs compares with dlm-sys.
 */
#include <linux/dlmconstants.h>
#include <linux/dlm.h>
#include <linux/dlm_device.h>
