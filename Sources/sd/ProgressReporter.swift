// Progress on stderr: a redrawn bar on a terminal, plain lines otherwise, nothing with --quiet.

import Dispatch
import Foundation
import SDPipeline
import Synchronization

/// Writes progress to stderr.
final class ProgressReporter: Sendable {
  let quiet: Bool
  let isTerminal: Bool
  private let start = Date()
  private let lastStep = Mutex<Date>(Date())

  init(quiet: Bool) {
    self.quiet = quiet
    isTerminal = isatty(2) == 1
  }

  func note(_ message: String) {
    guard !quiet else { return }
    writeError(message + "\n")
  }

  func warn(_ message: String) { writeError("sd: warning: \(message)\n") }

  func finish(_ message: String) {
    guard !quiet else { return }
    writeError(String(format: "%@ in %.1f s\n", message, Date().timeIntervalSince(start)))
  }

  /// The pipeline's progress callback: reports the step, and returns false once Ctrl-C was hit.
  func callback(_ cancellation: Cancellation) -> @Sendable (GenerationProgress) -> Bool {
    { [self] progress in
      if !quiet { report(progress) }
      return !cancellation.isRequested
    }
  }

  private func report(_ progress: GenerationProgress) {
    let now = Date()
    let seconds = lastStep.withLock { last in
      defer { last = now }
      return now.timeIntervalSince(last)
    }
    let remaining = Double(progress.totalSteps - progress.step) * seconds
    let status = String(
      format: "step %d/%d  %.2f s/step  ETA %.0f s", progress.step, progress.totalSteps, seconds,
      remaining)
    if isTerminal {
      let width = 30
      let filled = width * progress.step / max(1, progress.totalSteps)
      let bar =
        String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
      writeError("\r[\(bar)] \(status)" + (progress.step == progress.totalSteps ? "\n" : ""))
    } else {
      writeError(status + "\n")
    }
  }
}

/// Writes to standard error (Glibc's `stderr` is a shared C global Swift 6 will not touch).
func writeError(_ text: String) {
  FileHandle.standardError.write(Data(text.utf8))
}
