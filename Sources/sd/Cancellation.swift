// Ctrl-C and termination: the first SIGINT, SIGTERM or SIGHUP stops the run at the next check
// inside the models (between blocks, between attention query blocks: well under a second at
// 512x512) and nothing is written; a second one exits at once. No partial file is left.

import Dispatch
import Foundation
import SDPipeline
import SDTensor
import Synchronization

/// Set by a signal; generation reads it through `flag` (set in the compute options).
final class Cancellation: Sendable {
  /// The signals that cancel a run (each would otherwise kill the process mid-write).
  static let signals: [Int32] = [SIGINT, SIGTERM, SIGHUP]
  /// The first signal received, 0 while none.
  private let received = Atomic<Int32>(0)
  /// Cancelled by the first signal.
  let flag = CancellationFlag()
  /// Outputs on disk that have not taken their place yet, removed on a forced exit.
  private let pending = Mutex<[String: PreparedOutput]>([:])

  var isRequested: Bool { received.load(ordering: .relaxed) != 0 }

  /// The exit status of a cancelled run: 128 + the signal, as a shell reports it (130 for
  /// Ctrl-C; 130 too when the library was cancelled without a signal).
  var exitStatus: Int32 {
    let signal = received.load(ordering: .relaxed)
    return 128 + (signal == 0 ? SIGINT : signal)
  }

  /// Routes the signals to this object instead of their default action. A second signal removes
  /// the pending outputs and exits with 128 + its number. Keep the returned sources alive.
  func installSignalHandlers() -> [DispatchSourceSignal] {
    Cancellation.signals.map { number in
      signal(number, SIG_IGN)
      let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
      source.setEventHandler { [self] in
        let (isFirst, _) = received.compareExchange(
          expected: 0, desired: number, ordering: .relaxed)
        guard !isFirst else {
          flag.cancel()
          return
        }
        pending.withLock { outputs in outputs.values.forEach { $0.discard() } }
        writeError("\nsd: interrupted again; stopped, no output written\n")
        exit(128 + number)
      }
      source.resume()
      return source
    }
  }

  /// Prepares `bytes` for `output`, tracked until `commitAll` so a forced exit removes it.
  func prepare(_ bytes: [UInt8], for output: OutputFile) throws(UsageError) -> PreparedOutput {
    let prepared = try output.prepare(bytes)
    pending.withLock { $0[output.option] = prepared }
    return prepared
  }

  /// Puts every prepared output in place, or none (throwing `PipelineError.cancelled`) when a
  /// signal arrived while they were produced.
  func commitAll(_ outputs: [PreparedOutput]) throws {
    defer { pending.withLock { $0.removeAll() } }
    guard !isRequested else {
      outputs.forEach { $0.discard() }
      throw PipelineError.cancelled
    }
    try PreparedOutput.commitAll(outputs)
  }
}
