// `--preview FILE`: the previews the progress callback carries, written as PNG while the run goes
// on, each one replacing the last atomically (a viewer polling the file never sees half of one).

import SDPipeline
import Synchronization

/// Where `--preview` writes, checked before the run like `--output`.
final class PreviewFile: Sendable {
  /// The checked destination, replaced by each preview after the first.
  private let output: OutputFile
  private let reporter: ProgressReporter
  private let cancellation: Cancellation
  /// Whether a write failed already (the warning is given once; the run goes on).
  private let failed = Mutex(false)

  /// `--preview value`: a file (not `-`), which may exist only with `overwrite`, and not one
  /// of `others` (the run's image outputs).
  init(
    _ value: String, overwrite: Bool, others: [OutputFile], reporter: ProgressReporter,
    cancellation: Cancellation
  ) throws(UsageError) {
    guard value != "-" else {
      throw UsageError("--preview: standard output is not supported; name a file")
    }
    let checked = try OutputFile(option: "preview", value: value, overwrite: overwrite)
    for other in others where checked.isSameDestination(as: other) {
      throw UsageError("--preview: '\(value)' is also the --\(other.option)")
    }
    // Checked above; from here on the file is the run's own to replace.
    output = try OutputFile(option: "preview", value: value, overwrite: true)
    self.reporter = reporter
    self.cancellation = cancellation
  }

  /// Writes `image` in place of the previous preview; a failure (a full disk) is a warning,
  /// given once, and does not stop the generation.
  func write(_ image: RGBImage) {
    do {
      let prepared = try cancellation.prepare(try image.pngData(), for: output)
      try cancellation.commitAll([prepared])
    } catch PipelineError.cancelled {
      return  // the progress callback stops the run
    } catch {
      let first = failed.withLock { failed in
        defer { failed = true }
        return !failed
      }
      if first { reporter.warn("could not write the preview: \(error)") }
    }
  }
}
