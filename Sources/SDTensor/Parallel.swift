// The one parallel-for of the package, and the options object that carries the thread count.
// Work is cut into chunks by problem size only, so results are bit-identical for any thread count.

import Dispatch
import Foundation

/// How kernels may use the machine. Passed from the pipeline through the models to each kernel.
public struct ComputeOptions: Sendable, Equatable {
  /// How many threads our own kernels may run at once (at least 1).
  public var threadCount: Int

  /// - Parameter threadCount: threads for our kernels (default: the cores this process may use);
  ///   values below 1 are treated as 1. Results do not depend on it.
  public init(threadCount: Int = ProcessInfo.processInfo.activeProcessorCount) {
    self.threadCount = Swift.max(1, threadCount)
  }
}

/// Runs `body` over `0..<count` cut into chunks of `grain` items (the last may be shorter), on up
/// to `options.threadCount` threads. Chunk boundaries depend only on `count` and `grain`, so any
/// per-chunk reduction gives the same bits whatever the thread count. `body` may multiply
/// matrices (`sgemm` runs on the calling thread).
func parallelFor(
  _ count: Int, grain: Int, options: ComputeOptions,
  _ body: @Sendable (Range<Int>) -> Void
) {
  guard count > 0 else { return }
  let grain = Swift.max(1, grain)
  let chunks = (count + grain - 1) / grain
  let workers = Swift.min(options.threadCount, chunks)
  if workers <= 1 {
    for chunk in 0..<chunks { body(chunk * grain..<Swift.min(count, (chunk + 1) * grain)) }
    return
  }
  // Worker w takes chunks w, w + workers, ...: a static schedule, so no shared counter is needed.
  DispatchQueue.concurrentPerform(iterations: workers) { worker in
    var chunk = worker
    while chunk < chunks {
      body(chunk * grain..<Swift.min(count, (chunk + 1) * grain))
      chunk += workers
    }
  }
}

/// A pointer that may be shared by the iterations of `parallelFor` because each iteration writes
/// a disjoint range of it (the kernels using it say which). Never escapes the kernel that made it.
struct SharedMutablePointer: @unchecked Sendable {
  let base: UnsafeMutablePointer<Float>
  init(_ base: UnsafeMutablePointer<Float>) { self.base = base }
}

/// Read-only counterpart of `SharedMutablePointer`: the memory is not written while it is shared.
struct SharedPointer: @unchecked Sendable {
  let base: UnsafePointer<Float>
  init(_ base: UnsafePointer<Float>) { self.base = base }
}
