// How the process's allocator treats the large activation buffers the kernels allocate and free
// at every layer. Process-wide, so it is applied by `Runtime.configure`.

import CMalloc

/// Process-wide allocator settings.
enum HeapPolicy {
  /// Keeps freed memory in the heap for the next allocation instead of returning it to the
  /// system. glibc serves blocks above its mmap threshold (at most 32 MB) with fresh mappings and
  /// unmaps them on free, so every large activation tensor (134 MB for a 128-channel 512×512 VAE
  /// layer) would be paid again in page faults and kernel zeroing. Measured on the bench: VAE
  /// decode 8.0 -> 7.1 s, VAE encode 4.7 -> 3.3 s, a 2-step 512×512 txt2img 47 -> 42 s, for
  /// 30–50 MB more peak resident memory. A no-op where the allocator is not glibc's.
  static func keepFreedMemory() {
    #if os(Linux)
      _ = mallopt(M_MMAP_MAX, 0)
      _ = mallopt(M_TRIM_THRESHOLD, Int32.max)
    #endif
  }
}
