// Process-wide set-up in one call, for the executables and for apps that embed the library, and
// what this build computes with.

import CBLAS
import Foundation

/// The process-wide side of running this library.
public enum Runtime {
  /// Prepares the process for generation work and returns the options to pass to it, with
  /// `threads` threads for our kernels (default: every core of the machine). Call it once, before
  /// the first generation; calling it again changes nothing more.
  ///
  /// Process-wide, it makes glibc keep freed memory for reuse instead of unmapping every large
  /// activation buffer (see `HeapPolicy`): VAE decode 8.0 → 7.1 s for ~30 MB more peak memory.
  /// Nothing else needs setting up: results are the same bytes with or without this call, and
  /// whatever the thread count.
  public static func configure(threads: Int? = nil) -> ComputeOptions {
    HeapPolicy.keepFreedMemory()
    return threads.map { ComputeOptions(threadCount: $0) } ?? ComputeOptions()
  }

  /// The matrix-product kernel of this build, e.g. "Swift SIMD GEMM (AVX-512, 12x32 tile)".
  public static var matrixKernel: String {
    #if SD_AVX512
      return "Swift SIMD GEMM (AVX-512, \(gemmTileRows)x\(gemmTileColumns) tile)"
    #elseif SD_AVX2
      return "Swift SIMD GEMM (AVX2, \(gemmTileRows)x\(gemmTileColumns) tile)"
    #elseif canImport(Accelerate)
      return "Accelerate"
    #else
      let config = openblas_get_config().map { String(cString: $0) } ?? "OpenBLAS"
      let core = openblas_get_corename().map { String(cString: $0) } ?? "?"
      return "\(config) core=\(core), on one thread per task"
    #endif
  }

  /// Whether this build runs our own GEMM, whose results are the same bytes on every CPU it runs
  /// on (AVX2 and AVX-512 builds alike), rather than a BLAS library's.
  public static var usesPortableGEMM: Bool {
    #if SD_AVX512 || SD_AVX2
      return true
    #else
      return false
    #endif
  }
}
