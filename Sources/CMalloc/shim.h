// Shim over the C library's malloc.h, for glibc's mallopt (see SDTensor's HeapPolicy.swift).
// Adds nothing of its own; empty where there is no malloc.h.
#if __has_include(<malloc.h>)
#include <malloc.h>
#endif
