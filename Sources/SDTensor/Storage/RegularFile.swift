// Reading the small files a model or a request names (configs, tokenizer files, images) without
// being stopped by what is not a file: a FIFO would block `open` forever and a device would be
// read without end, so the file is opened non-blocking, checked with fstat, and read to its size.

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

// The C calls under other names: inside `RegularFile`, `open` and `read` are its own.
private func systemOpen(_ path: String, _ flags: Int32) -> Int32 { open(path, flags) }
private func systemRead(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int {
  read(fd, buffer, count)
}

/// Whole reads of regular files.
public enum RegularFile {
  /// The bytes of the regular file at `path`, at most `maximumBytes` of them.
  /// - Throws: `WeightError.unreadableFile` naming the path: it does not exist, cannot be read,
  ///   is not a regular file (a folder, FIFO, device, socket), or is larger than `maximumBytes`.
  public static func read(_ path: String, maximumBytes: Int = 1 << 30) throws(WeightError)
    -> [UInt8]
  {
    let (fd, size) = try open(path)
    defer { close(fd) }
    guard size <= maximumBytes else {
      throw .unreadableFile(
        path: path, reason: "\(size) bytes, more than the \(maximumBytes) allowed")
    }
    var bytes = [UInt8](repeating: 0, count: size)
    var done = 0
    let failure: String? = bytes.withUnsafeMutableBytes { buffer in
      while done < size, let base = buffer.baseAddress {
        let count = systemRead(fd, base + done, size - done)
        if count < 0 {
          if errno == EINTR { continue }
          return String(cString: strerror(errno))
        }
        if count == 0 { return "it shrank while being read" }
        done += count
      }
      return nil
    }
    if let failure { throw .unreadableFile(path: path, reason: failure) }
    return bytes
  }

  /// `path` opened for reading, and its size; the caller closes the descriptor. Non-blocking, so
  /// that a FIFO is refused instead of hanging in `open`.
  /// - Throws: `WeightError.unreadableFile` as `read`.
  static func open(_ path: String) throws(WeightError) -> (descriptor: Int32, size: Int) {
    let fd = systemOpen(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
    guard fd >= 0 else {
      throw .unreadableFile(path: path, reason: String(cString: strerror(errno)))
    }
    var info = stat()
    guard fstat(fd, &info) == 0 else {
      let reason = String(cString: strerror(errno))
      close(fd)
      throw .unreadableFile(path: path, reason: reason)
    }
    do { try requireRegular(info, path: path) } catch {
      close(fd)
      throw error
    }
    return (fd, Int(info.st_size))
  }

  /// Throws unless `info` is a regular file's, naming what it is instead.
  private static func requireRegular(_ info: stat, path: String) throws(WeightError) {
    let kind: String? =
      switch info.st_mode & S_IFMT {
      case S_IFREG: nil
      case S_IFDIR: "a folder"
      case S_IFIFO: "a FIFO (named pipe)"
      case S_IFCHR, S_IFBLK: "a device"
      case S_IFSOCK: "a socket"
      default: "not a regular file"
      }
    if let kind { throw .unreadableFile(path: path, reason: "it is \(kind), not a regular file") }
  }
}
