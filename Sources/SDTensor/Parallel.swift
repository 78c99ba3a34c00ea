// The one parallel-for of the package, and the options object that carries the thread count and
// the cancellation flag. Work is cut into chunks by problem size only, so results are
// bit-identical for any thread count.

import Dispatch
import Foundation
import Synchronization

/// How kernels may use the machine. Passed from the pipeline through the models to each kernel.
public struct ComputeOptions: Sendable, Equatable {
  /// How many threads our own kernels may run at once (at least 1).
  public var threadCount: Int
  /// When set and cancelled, long operations (model blocks, attention) stop early and return
  /// unspecified values of the right shape; whoever set it checks it after the call.
  public var cancellation: CancellationFlag?

  /// - Parameters:
  ///   - threadCount: threads for our kernels (default: the cores this process may use); values
  ///     below 1 are treated as 1. Results do not depend on it.
  ///   - cancellation: a flag the models check between blocks; nil: the work cannot be
  ///     cancelled.
  public init(
    threadCount: Int = ProcessInfo.processInfo.activeProcessorCount,
    cancellation: CancellationFlag? = nil
  ) {
    self.threadCount = Swift.max(1, threadCount)
    self.cancellation = cancellation
  }

  /// Whether the work these options drive has been cancelled.
  public var isCancelled: Bool { cancellation?.isCancelled ?? false }
}

/// A request to stop, set from any thread (a signal handler's queue, a Task's cancellation
/// handler) and read by the running work. A 4096-token attention or a UNet block at 2048x2048
/// takes seconds to minutes, so checking only between steps would leave Ctrl-C unanswered.
public final class CancellationFlag: Sendable, Equatable {
  private let cancelled = Atomic<Bool>(false)
  /// A flag whose cancellation cancels this one too (the caller's, under a Task's own).
  public let parent: CancellationFlag?

  /// A flag not yet cancelled; with `parent`, it also reads as cancelled once `parent` is.
  public init(parent: CancellationFlag? = nil) { self.parent = parent }

  /// Asks the work to stop; safe from any thread, and it cannot be undone.
  public func cancel() { cancelled.store(true, ordering: .relaxed) }

  /// Whether `cancel()` was called on this flag or on any of its parents.
  public var isCancelled: Bool {
    cancelled.load(ordering: .relaxed) || (parent?.isCancelled ?? false)
  }

  /// Identity: two flags are equal only when they are the same object.
  public static func == (a: CancellationFlag, b: CancellationFlag) -> Bool { a === b }
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
  // Each worker starts on its own chunk, then takes the next one not yet taken. On a shared host
  // one core may run slower than the other for seconds at a time; handing out chunks as workers
  // come free lets the faster one take more, where a fixed w, w + workers, ... split waits for the
  // slower (UNet 64x64 steps on a shared Zen 3, six interleaved pairs: 0.89-1.03x, median 0.96x).
  // Which worker runs a chunk changes no bits.
  let next = Atomic<Int>(workers)
  DispatchQueue.concurrentPerform(iterations: workers) { worker in
    var chunk = worker
    while chunk < chunks {
      body(chunk * grain..<Swift.min(count, (chunk + 1) * grain))
      chunk = next.add(1, ordering: .relaxed).oldValue
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
