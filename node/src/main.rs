//! The `basalt` binary.

fn main() -> std::process::ExitCode {
    bounded_big_buffers();
    node::cli::main()
}

/// File chunks pass through buffers of about 5 MiB (a request's chunk, its encoded form, the
/// frames that replicate it). glibc's allocator raises its mmap threshold each time such a
/// buffer is freed, after which they come from per-thread arenas that keep the memory: a node
/// that served a few uploads would hold hundreds of MiB it no longer uses. A fixed threshold
/// gives every buffer of 1 MiB or more its own mapping, returned to the system when freed.
fn bounded_big_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's parameters; called once, first thing in
    // main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
