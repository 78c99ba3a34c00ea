// Where `sd` writes its images: a file, written atomically and never over what it was told to
// keep, or standard output for `-`. The checks that can be made before any work starts run when
// the option is read; the final ones run when the file takes its place.

import Foundation
import SDTensor

/// One image output of a run, named by its option (`--output`, `--negative-effect`).
struct OutputFile {
  /// The option that named it, for messages.
  let option: String
  /// The file; nil for standard output.
  let path: String?
  let overwrite: Bool

  /// Checks `value` as the option's output: `-` (standard output, refused when it is a
  /// terminal), or a path whose folder exists and is writable, that is not a folder itself and,
  /// unless `overwrite`, does not exist (a FIFO or device counts as existing).
  init(option: String, value: String, overwrite: Bool) throws(UsageError) {
    self.option = option
    self.overwrite = overwrite
    if value == "-" {
      guard isatty(1) == 0 else {
        throw UsageError(
          "--\(option) -: standard output is a terminal; redirect it (> image.png) or name a file")
      }
      path = nil
      return
    }
    guard !value.isEmpty, !value.hasSuffix("/") else {
      throw UsageError("--\(option): '\(value)' is not a file name")
    }
    path = value
    var status = stat()
    if lstat(value, &status) == 0 {
      var target = status
      let resolves = stat(value, &target) == 0
      guard !(resolves && target.st_mode & S_IFMT == S_IFDIR) else {
        throw UsageError("--\(option): '\(value)' is a folder")
      }
      guard overwrite else {
        throw UsageError("--\(option): '\(value)' exists (use --overwrite to replace it)")
      }
      guard resolves else {
        throw UsageError("--\(option): '\(value)' is a symbolic link to nothing")
      }
      let kind = target.st_mode & S_IFMT
      guard kind == S_IFREG || kind == S_IFIFO || kind == S_IFCHR else {
        throw UsageError(
          "--\(option): '\(value)' is not a regular file, FIFO or character device")
      }
    }
    let folder = URL(fileURLWithPath: value).deletingLastPathComponent().path
    guard FileManager.default.isWritableFile(atPath: folder) else {
      throw UsageError("--\(option): cannot write into '\(folder)'")
    }
  }

  /// How messages name it.
  var displayName: String { path ?? "standard output" }

  /// Whether `other` would write to the same place (same name, or the same existing file).
  func isSameDestination(as other: OutputFile) -> Bool {
    guard let path, let otherPath = other.path else { return self.path == other.path }
    if URL(fileURLWithPath: path).standardized == URL(fileURLWithPath: otherPath).standardized {
      return true
    }
    var (a, b) = (stat(), stat())
    return stat(path, &a) == 0 && stat(otherPath, &b) == 0 && a.st_dev == b.st_dev
      && a.st_ino == b.st_ino
  }

  /// Puts `bytes` on disk without touching the destination yet (see `AtomicFile.prepare`).
  func prepare(_ bytes: [UInt8]) throws(UsageError) -> PreparedOutput {
    guard let path else { return PreparedOutput(output: self, pending: nil, bytes: bytes) }
    do {
      let pending = try AtomicFile.prepare(
        bytes, to: path, existing: overwrite ? .replace : .keep)
      return PreparedOutput(output: self, pending: pending, bytes: [])
    } catch {
      throw describe(error)
    }
  }

  fileprivate func describe(_ error: WeightError) -> UsageError {
    switch error {
    case .destinationExists(let path):
      return UsageError(
        "--\(option): '\(path)' appeared during the run and was left as it is (use --overwrite to replace it)"
      )
    case .unwritableFile(let path, let reason):
      return UsageError("--\(option): cannot write '\(path)': \(reason)")
    default: return UsageError("--\(option): \(error)")
    }
  }
}

/// An output whose data is ready: `commitAll` puts it in place, `discard` drops it.
struct PreparedOutput {
  let output: OutputFile
  fileprivate let pending: AtomicFile.Pending?
  /// The PNG for standard output (files keep theirs on disk).
  fileprivate let bytes: [UInt8]

  /// Puts every output in place, or none: files first (taken back if a later one fails), then
  /// standard output, which cannot be taken back (there is at most one: outputs differ).
  static func commitAll(_ outputs: [PreparedOutput]) throws(UsageError) {
    let files = outputs.filter { $0.pending != nil }
    do { try AtomicFile.commitAll(files.compactMap(\.pending)) } catch {
      let failedPath: String? =
        switch error {
        case .destinationExists(let path), .unwritableFile(let path, _): path
        default: nil
        }
      let owner = files.first { $0.pending?.path == failedPath } ?? files[0]
      throw owner.output.describe(error)
    }
    for output in outputs where output.pending == nil {
      if let failure = AtomicFile.writeAll(output.bytes, to: 1, sync: false) {
        throw UsageError("--\(output.output.option): cannot write to standard output: \(failure)")
      }
    }
  }

  func discard() { pending?.discard() }
}
