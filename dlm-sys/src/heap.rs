//! Giving freed heap memory back to the kernel: what a long-running
//! daemon does once a burst of work is over, so that its resident size
//! comes back down.
//!
//! glibc's allocator keeps freed memory for reuse; it returns only the
//! top of the heap, and only past a threshold. `malloc_trim(0)` returns
//! every whole free page, wherever it lies. Other C libraries (musl)
//! have no such call: there this does nothing.
//!
//! Needs the `std` feature.

/// Return the heap's free pages to the kernel (glibc's `malloc_trim(0)`).
/// `true` if memory was given back; always `false` where the C library
/// has no such call.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointer and only walks the
        // allocator's own lists, under the allocator's locks; it is safe
        // to call from any thread at any time.
        unsafe { libc::malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
