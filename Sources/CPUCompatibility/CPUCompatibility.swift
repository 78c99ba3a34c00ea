// The start-up check of the executables: a binary built for a vector ISA (Package.swift's
// `-target-cpu`) stops with one line naming what the CPU lacks, instead of dying with SIGILL in
// the first kernel. This module is compiled for baseline x86-64, and it uses only C calls,
// integers and static strings: the linker may give a binary's generic Swift code (String, Array,
// Data helpers) the copy compiled for the wider ISA, which would fault before the message.

#if canImport(Glibc)
  import Glibc
#endif
#if arch(x86_64)
  import CCPUID
#endif

/// Whether this CPU can run the build's kernels.
public enum CPUCompatibility {
  /// Returns when this CPU has every extension the libraries were compiled for; otherwise writes
  /// one line on stderr naming the missing ones and exits with status 1.
  public static func exitIfUnsupported(program: StaticString) {
    #if arch(x86_64) && canImport(Glibc) && (SD_AVX512 || SD_AVX2)
      let present = featureBits()
      guard present & required != required else { return }
      write(program)
      write(": this binary was built for ")
      write(target)
      write(" CPUs and this CPU lacks")
      for (bit, name) in names where required & bit != 0 && present & bit == 0 {
        write(" ")
        write(name)
      }
      write("; rebuild it on this machine (swift build -c release) or build one that runs anywhere")
      write(" with SD_TARGET_CPU=x86-64\n")
      exit(1)
    #endif
  }

  #if arch(x86_64) && canImport(Glibc) && (SD_AVX512 || SD_AVX2)
    /// One bit per extension Package.swift checks before choosing `haswell` or `skylake-avx512`.
    private static let names: KeyValuePairs<UInt32, StaticString> = [
      1 << 0: "avx", 1 << 1: "avx2", 1 << 2: "fma", 1 << 3: "f16c", 1 << 4: "bmi1", 1 << 5: "bmi2",
      1 << 6: "movbe", 1 << 7: "avx512f", 1 << 8: "avx512dq", 1 << 9: "avx512cd",
      1 << 10: "avx512bw", 1 << 11: "avx512vl",
    ]

    #if SD_AVX512
      private static let required: UInt32 = 0xFFF
      private static let target: StaticString = "skylake-avx512"
    #else
      private static let required: UInt32 = 0x7F
      private static let target: StaticString = "haswell"
    #endif

    /// The CPU's extensions as bits of `names` (CPUID leaves 1 and 7).
    private static func featureBits() -> UInt32 {
      var (a, b, c, d): (UInt32, UInt32, UInt32, UInt32) = (0, 0, 0, 0)
      var bits: UInt32 = 0
      // Leaf 1, ECX: FMA 12, MOVBE 22, AVX 28, F16C 29; OSXSAVE 27 says the OS saves the vector
      // registers, without which AVX is unusable.
      if __get_cpuid_count(1, 0, &a, &b, &c, &d) != 0, c >> 27 & 1 == 1 {
        bits |= (c >> 28 & 1) | (c >> 12 & 1) << 2 | (c >> 29 & 1) << 3 | (c >> 22 & 1) << 6
      }
      // Leaf 7, EBX: BMI1 3, AVX2 5, BMI2 8, AVX512F 16, DQ 17, CD 28, BW 30, VL 31.
      if __get_cpuid_count(7, 0, &a, &b, &c, &d) != 0 {
        bits |= (b >> 5 & 1) << 1 | (b >> 3 & 1) << 4 | (b >> 8 & 1) << 5
        bits |= (b >> 16 & 1) << 7 | (b >> 17 & 1) << 8 | (b >> 28 & 1) << 9
        bits |= (b >> 30 & 1) << 10 | (b >> 31 & 1) << 11
      }
      return bits
    }

    private static func write(_ text: StaticString) {
      _ = Glibc.write(2, text.utf8Start, text.utf8CodeUnitCount)
    }
  #endif
}
