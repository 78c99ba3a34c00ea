// Whole-file writes that never leave a partial file, never follow a planted link and never
// replace what they were told to keep. Used for every PNG and safetensors file we write.

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Writes files so that the destination holds either its old content or all of the new.
public enum AtomicFile {
  /// What a write may do when something already exists at the destination.
  public enum Existing: Sendable {
    /// Fail with `WeightError.destinationExists`, checked atomically at the final step, so a file
    /// that appears while the data is being produced is not replaced either.
    case keep
    /// Replace a regular file (through a symbolic link: the link's target, the link stays), and
    /// write into a FIFO or character device in place (`/dev/null`, a pipe a reader waits on).
    /// Anything else (a folder, a socket, a block device, a dangling link) is refused.
    case replace
  }

  /// Writes `bytes` to `path`: `prepare` then `commit`. `commit` is asked once the data is on
  /// disk; returning false abandons the write (nothing changes) and the call returns false.
  /// - Throws: `WeightError.unwritableFile` or `.destinationExists`, naming the path.
  @discardableResult
  public static func write(
    _ bytes: [UInt8], to path: String, existing: Existing = .replace,
    commit: () -> Bool = { true }
  ) throws(WeightError) -> Bool {
    let pending = try prepare(bytes, to: path, existing: existing)
    guard commit() else {
      pending.discard()
      return false
    }
    try pending.commit()
    return true
  }

  /// Puts `bytes` on disk for `path` without touching `path` yet: a regular file's data goes to
  /// a new temporary file in the same folder (created exclusively, under an unpredictable name,
  /// not following links) and is synced. `commit` then links (`.keep`) or renames (`.replace`) it
  /// into place; `discard` removes it. Preparing two files before committing either lets a caller
  /// write both or neither.
  /// - Throws: `WeightError.unwritableFile` or `.destinationExists`, naming the path.
  public static func prepare(_ bytes: [UInt8], to path: String, existing: Existing = .replace)
    throws(WeightError) -> Pending
  {
    var destination = path
    var status = stat()
    if lstat(path, &status) == 0 {
      guard existing == .replace else { throw .destinationExists(path: path) }
      if status.st_mode & S_IFMT == S_IFLNK {
        // Follow the link once, to what it names now; its target is what gets replaced.
        guard stat(path, &status) == 0, let resolved = realpath(path, nil) else {
          throw .unwritableFile(path: path, reason: "it is a symbolic link to nothing")
        }
        destination = String(cString: resolved)
        free(resolved)
      }
      switch status.st_mode & S_IFMT {
      case S_IFREG: break
      case S_IFIFO, S_IFCHR:
        return Pending(path: path, destination: destination, kind: .inPlace(bytes))
      case S_IFDIR: throw .unwritableFile(path: path, reason: "it is a folder")
      default: throw .unwritableFile(path: path, reason: "it is not a regular file")
      }
    } else if errno != ENOENT {
      throw .unwritableFile(path: path, reason: String(cString: strerror(errno)))
    }
    let (fd, temporary) = try createTemporary(besides: destination, reportedAs: path)
    let failure = writeAll(bytes, to: fd, sync: true)
    close(fd)
    if let failure {
      unlink(temporary)
      throw .unwritableFile(path: path, reason: failure)
    }
    return Pending(
      path: path, destination: destination,
      kind: .temporary(temporary, replacing: existing == .replace))
  }

  /// A prepared write: `commit` or `discard` it, once.
  public struct Pending: Sendable {
    enum Kind {
      case temporary(String, replacing: Bool)
      case inPlace([UInt8])
    }
    /// The path as the caller named it (for messages).
    public let path: String
    let destination: String
    let kind: Kind

    /// Puts the file in place. On failure the temporary file is removed and `path` is unchanged.
    /// - Throws: `WeightError.unwritableFile` or `.destinationExists`.
    public func commit() throws(WeightError) { try commitUndoably().finish() }

    /// Commits, keeping what `Committed.undo` needs to put the old state back.
    fileprivate func commitUndoably() throws(WeightError) -> Committed {
      switch kind {
      case .inPlace(let bytes):
        let fd = open(destination, O_WRONLY | O_CLOEXEC | O_NOCTTY)
        guard fd >= 0 else {
          throw .unwritableFile(path: path, reason: String(cString: strerror(errno)))
        }
        defer { close(fd) }
        if let failure = writeAll(bytes, to: fd, sync: false) {
          throw .unwritableFile(path: path, reason: failure)
        }
        return Committed(destination: destination, restoration: .none)
      case .temporary(let temporary, replacing: true):
        // The old file stays reachable under a second name until every write of a set is in.
        let backup = AtomicFile.linkBackup(of: destination)
        guard rename(temporary, destination) == 0 else {
          let reason = String(cString: strerror(errno))
          unlink(temporary)
          if case .restore(let name) = backup { unlink(name) }
          throw .unwritableFile(path: path, reason: reason)
        }
        return Committed(destination: destination, restoration: backup)
      case .temporary(let temporary, replacing: false):
        // link(2) fails if anything (even a dangling link) now exists at the path: the check
        // and the creation are one step.
        let linked = link(temporary, destination) == 0
        let error = errno
        unlink(temporary)
        guard linked else {
          if error == EEXIST { throw .destinationExists(path: path) }
          throw .unwritableFile(path: path, reason: String(cString: strerror(error)))
        }
        return Committed(destination: destination, restoration: .remove)
      }
    }

    /// Drops the prepared data; nothing changes at `path`.
    public func discard() {
      if case .temporary(let temporary, _) = kind { unlink(temporary) }
    }
  }

  /// Commits `writes` in order, all or none: when one fails, those already in place are put
  /// back (a new file removed, a replaced one restored from a second link kept until all are
  /// in) and its error is thrown. A write into a FIFO or device cannot be taken back: put those
  /// last.
  /// - Throws: the first failing write's `WeightError`, naming its path.
  public static func commitAll(_ writes: [Pending]) throws(WeightError) {
    var committed: [Committed] = []
    for (index, write) in writes.enumerated() {
      do {
        committed.append(try write.commitUndoably())
      } catch {
        committed.reversed().forEach { $0.undo() }
        writes[(index + 1)...].forEach { $0.discard() }
        throw error
      }
    }
    committed.forEach { $0.finish() }
  }

  /// A committed write that can still be taken back.
  fileprivate struct Committed {
    enum Undo {
      /// Nothing to restore (a FIFO or device), or the old file could not be kept.
      case none
      /// The path did not exist before.
      case remove
      /// The old file, linked under this name.
      case restore(String)
    }
    let destination: String
    let restoration: Undo

    func undo() {
      switch restoration {
      case .none: break
      case .remove: unlink(destination)
      case .restore(let backup): rename(backup, destination)
      }
    }

    func finish() {
      if case .restore(let backup) = restoration { unlink(backup) }
    }
  }

  /// A second name for the file at `destination`, beside it (`.remove` if there is none).
  fileprivate static func linkBackup(of destination: String) -> Committed.Undo {
    for _ in 0..<16 {
      let name = temporaryName(besides: destination)
      if link(destination, name) == 0 { return .restore(name) }
      if errno == ENOENT { return .remove }
      guard errno == EEXIST else { return .none }
    }
    return .none
  }

  /// `.<name>.<random>.partial` in `destination`'s folder.
  private static func temporaryName(besides destination: String) -> String {
    let slash = destination.lastIndex(of: "/")
    let folder = slash.map { String(destination[...$0]) } ?? ""
    let name = slash.map { String(destination[destination.index(after: $0)...]) } ?? destination
    let suffix = String(UInt64.random(in: 0...UInt64.max), radix: 36)
    return "\(folder).\(name).\(suffix).partial"
  }

  /// A new file beside `destination`, opened for writing: `.<name>.<random>.partial`.
  private static func createTemporary(besides destination: String, reportedAs path: String)
    throws(WeightError) -> (Int32, String)
  {
    for _ in 0..<16 {
      let temporary = temporaryName(besides: destination)
      let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
      if fd >= 0 { return (fd, temporary) }
      guard errno == EEXIST else {
        throw .unwritableFile(path: path, reason: String(cString: strerror(errno)))
      }
    }
    throw .unwritableFile(path: path, reason: "no free temporary name in its folder")
  }

  /// Writes every byte to an open descriptor (standard output included); nil on success, else
  /// the system's reason.
  public static func writeAll(_ bytes: [UInt8], to fd: Int32, sync: Bool) -> String? {
    var written = 0
    return bytes.withUnsafeBytes { buffer -> String? in
      while written < buffer.count {
        guard let base = buffer.baseAddress else { return nil }
        let result = systemWrite(fd, base + written, buffer.count - written)
        if result < 0 {
          if errno == EINTR { continue }
          return String(cString: strerror(errno))
        }
        written += result
      }
      return !sync || fsync(fd) == 0 ? nil : String(cString: strerror(errno))
    }
  }
}

/// POSIX write(2), named apart from `AtomicFile.write` which would shadow it.
private func systemWrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
  write(fd, buffer, count)
}
