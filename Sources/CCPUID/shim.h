// Shim over the compiler's cpuid.h (x86 only): __get_cpuid_count, for the start-up check that a
// binary's vector ISA is present (see CPUCompatibility). Adds nothing of its own.
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
