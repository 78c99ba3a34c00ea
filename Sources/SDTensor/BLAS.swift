// Process-wide BLAS settings: OpenBLAS's thread count and which of its CPU-specific kernel sets
// runs. Both are globals inside OpenBLAS, so only an executable should set them, once, before any
// work (see STYLE.md, concurrency pitfall 8).

import CBLAS
import Dispatch

#if canImport(Glibc)
  import Glibc
#endif

/// Process-wide BLAS settings.
public enum BLAS {
  /// Sets the number of threads OpenBLAS uses inside one sgemm call.
  public static func setThreadCount(_ count: Int) {
    #if canImport(Accelerate)
      _ = count
    #else
      openblas_set_num_threads(Int32(Swift.max(1, count)))
    #endif
  }

  /// A one-line description of the BLAS build (library, core kernel chosen at run time).
  public static var buildDescription: String {
    #if canImport(Accelerate)
      return "Accelerate"
    #else
      let config = openblas_get_config().map { String(cString: $0) } ?? "OpenBLAS"
      return "\(config) core=\(kernelName ?? "?")"
    #endif
  }

  /// The kernel set OpenBLAS runs (its core name, e.g. "Haswell"); nil for other libraries.
  public static var kernelName: String? {
    #if canImport(Accelerate)
      return nil
    #else
      return openblas_get_corename().map { String(cString: $0) }
    #endif
  }

  /// What `selectFastestKernels` measured and kept.
  public struct KernelChoice: Sendable {
    /// The kernel set now in use.
    public let chosen: String
    /// Each candidate's best single-threaded rate on the measurement's GEMMs, in GFLOP/s.
    public let gigaflops: [String: Double]
  }

  /// Times OpenBLAS's own pick of kernels against its AVX2 ("Haswell") set, single-threaded on the
  /// GEMM shapes a UNet issues, and keeps the faster. OpenBLAS picks by CPU model, and on hosts
  /// with AVX-512 its AVX-512 kernels have measured slower than its AVX2 ones (here: UNet step
  /// 9.9 → 9.2 s, attention 0.39 → 0.35 s with the AVX2 set), so the choice is measured rather
  /// than assumed. The other set must win by 3 % so that noise does not flip the choice between
  /// runs: different kernels round differently, so a rerun with other kernels differs in the last
  /// bits. Takes ~0.2 s. Returns nil, changing nothing, when OpenBLAS was told its kernels with
  /// `OPENBLAS_CORETYPE`, is not a DYNAMIC_ARCH build, or has no AVX2 alternative to its pick.
  /// Call it after `setThreadCount(1)` (the measurement times single calls).
  public static func selectFastestKernels() -> KernelChoice? {
    #if canImport(Glibc) && !canImport(Accelerate)
      guard getenv("OPENBLAS_CORETYPE") == nil, let switcher = KernelSwitcher(),
        let automatic = kernelName,
        ["SkylakeX", "Cooperlake", "SapphireRapids"].contains(automatic)
      else { return nil }
      // Alternate the candidates so both see the same stretch of a shared host's load.
      var best = [automatic: 0.0, "Haswell": 0.0]
      for _ in 0..<5 {
        for name in [automatic, "Haswell"] {
          switcher.use(name)
          best[name] = Swift.max(best[name, default: 0], measureGigaflops())
        }
      }
      let chosen =
        best["Haswell", default: 0] > 1.03 * best[automatic, default: 0]
        ? "Haswell" : automatic
      switcher.use(chosen)
      return KernelChoice(chosen: chosen, gigaflops: best)
    #else
      return nil
    #endif
  }
}

#if canImport(Glibc) && !canImport(Accelerate)
  /// OpenBLAS's DYNAMIC_ARCH entry points: `gotoblas_dynamic_init` picks the kernel table (from
  /// `OPENBLAS_CORETYPE` if set, else by CPU model) and sets its blocking; `_quit` forgets the
  /// pick. Looked up at run time because builds for a single CPU do not have them.
  private struct KernelSwitcher {
    typealias Entry = @convention(c) () -> Void
    let initialize: Entry
    let forget: Entry

    init?() {
      guard let process = dlopen(nil, RTLD_NOW),
        let initialize = dlsym(process, "gotoblas_dynamic_init"),
        let forget = dlsym(process, "gotoblas_dynamic_quit")
      else { return nil }
      self.initialize = unsafeBitCast(initialize, to: Entry.self)
      self.forget = unsafeBitCast(forget, to: Entry.self)
    }

    /// Switches to the kernel set `name`; no BLAS call may be running.
    func use(_ name: String) {
      setenv("OPENBLAS_CORETYPE", name, 1)
      forget()
      initialize()
      // Child processes (the PyTorch baseline) must not inherit the choice.
      unsetenv("OPENBLAS_CORETYPE")
    }
  }

  /// GFLOP/s of one pass over a linear-layer GEMM and the per-head attention GEMMs (head size 40,
  /// a block of 512 queries over 4096 keys), the shapes that dominate a UNet step.
  private func measureGigaflops() -> Double {
    let shapes = [(m: 1024, k: 320, n: 1280), (m: 512, k: 40, n: 4096), (m: 512, k: 4096, n: 40)]
    var seconds = 0.0
    var flops = 0.0
    for (m, k, n) in shapes {
      let a = UnsafeMutablePointer<Float>.allocate(capacity: m * k)
      let b = UnsafeMutablePointer<Float>.allocate(capacity: k * n)
      let c = UnsafeMutablePointer<Float>.allocate(capacity: m * n)
      defer { for buffer in [a, b, c] { buffer.deallocate() } }
      a.initialize(repeating: 0.5, count: m * k)
      b.initialize(repeating: 0.25, count: k * n)
      let start = DispatchTime.now().uptimeNanoseconds
      sgemm(
        transposeA: false, transposeB: false, m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n,
        c: c, ldc: n)
      seconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
      flops += 2.0 * Double(m * n * k)
    }
    return flops / seconds / 1e9
  }
#endif
