// The compiler's prefetch hint, which Swift has no spelling for: the GEMM asks for the next tile
// of C while the current one is computed (see SDTensor's GEMM.swift). A hint only: it changes no
// value, and compilers without the builtin get an empty function.
static inline void sd_prefetch_for_write(const void *address) {
#if defined(__has_builtin)
#if __has_builtin(__builtin_prefetch)
  __builtin_prefetch(address, 1, 3);
#endif
#endif
}
