/*
 * ct_version: dlm_kernel_version() and dlm_library_version().
 *
 * Both report the device interface version, 6.0.2 on every kernel from
 * 6.1 to 7.2 and in Debian's libdlm 4.2.0 (libdlm-abi.md 1.4, 2.7). A
 * replacement reports 6.0.2 from its fallback too, so the transcript is
 * the same on every backend.
 */
#include "ct.h"

int main(void)
{
	uint32_t maj = 99, min = 99, patch = 99;
	int rv;

	ct_begin("ct_version");

	ct_section("dlm_kernel_version");
	errno = 0;
	rv = dlm_kernel_version(&maj, &min, &patch);
	ct_call("dlm_kernel_version returns", rv, errno, 0);
	ct_eq_str("kernel version",
		  ct_what("%u.%u.%u", (unsigned)maj, (unsigned)min, (unsigned)patch), "6.0.2");
	/* A second call answers from the same control device. */
	maj = min = patch = 99;
	rv = dlm_kernel_version(&maj, &min, &patch);
	ct_call("dlm_kernel_version again returns", rv, errno, 0);
	ct_eq_str("kernel version again",
		  ct_what("%u.%u.%u", (unsigned)maj, (unsigned)min, (unsigned)patch), "6.0.2");

	ct_section("dlm_library_version");
	maj = min = patch = 99;
	dlm_library_version(&maj, &min, &patch);
	ct_eq_str("library version",
		  ct_what("%u.%u.%u", (unsigned)maj, (unsigned)min, (unsigned)patch), "6.0.2");

	return ct_end();
}
