/* The kernel UAPI headers dlm-rs is built on (package linux-libc-dev). */
#include <linux/dlmconstants.h>
#include <linux/dlm.h>
#include <linux/dlm_device.h>
