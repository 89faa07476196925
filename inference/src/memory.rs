//! How the process allocator should treat the large, short-lived buffers
//! inference makes: every layer's output is a fresh tensor of megabytes
//! (44 MB for YOLOv3-tiny's first layer at batch 4), freed a few layers
//! later.
//!
//! glibc serves blocks above its mmap threshold (at most 32 MiB) with a
//! fresh `mmap` and unmaps them on free, so each such tensor is
//! page-faulted and zeroed by the kernel again on every frame, and it
//! returns freed heap tops to the system as soon as they pass 128 KiB.
//! Measured on YOLOv3-tiny (2 cores, docs/benchmarks.md): the first layer
//! took 22 ms per batch of 4 that way against 9.4 ms with its memory
//! reused, and the whole model ran 7-12 % faster. jemalloc, tried instead,
//! was slower (it purges freed pages, then faults them in again).

/// Keeps freed large buffers in the heap for reuse: no `mmap` per
/// allocation, and the heap top trimmed only past 256 MiB. Resident memory
/// then settles at the working set's peak instead of following each
/// frame. Call once at start-up, before threads exist. A no-op where the
/// C library is not glibc.
pub fn reuse_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// Free memory at the heap top kept for the next frame.
        const TRIM_THRESHOLD: libc::c_int = 256 << 20;
        // SAFETY: mallopt only changes the allocator's parameters; called
        // before other threads allocate.
        let ok = unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        };
        if !ok {
            tracing::warn!("the C library refused the allocator settings for inference buffers");
        }
    }
}
