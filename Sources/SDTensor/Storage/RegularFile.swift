// Reading the small files a model or a request names (configs, tokenizer files, images) without
// being stopped by what is not a file: a FIFO would block `open` forever and a device would be
// read without end, so the file is opened non-blocking, checked with fstat, and read to its size.

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Whole reads of regular files.
public enum RegularFile {
  /// The bytes of the regular file at `path`, at most `maximumBytes` of them.
  /// - Throws: `WeightError.unreadableFile` naming the path: it does not exist, cannot be read,
  ///   is not a regular file (a folder, FIFO, device, socket), or is larger than `maximumBytes`.
  public static func read(_ path: String, maximumBytes: Int = 1 << 30) throws(WeightError)
    -> [UInt8]
  {
    let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
    guard fd >= 0 else {
      throw .unreadableFile(path: path, reason: String(cString: strerror(errno)))
    }
    defer { close(fd) }
    var info = stat()
    guard fstat(fd, &info) == 0 else {
      throw .unreadableFile(path: path, reason: String(cString: strerror(errno)))
    }
    try requireRegular(info, path: path)
    let size = Int(info.st_size)
    guard size <= maximumBytes else {
      throw .unreadableFile(
        path: path, reason: "\(size) bytes, more than the \(maximumBytes) allowed")
    }
    var bytes = [UInt8](repeating: 0, count: size)
    var done = 0
    let failure: String? = bytes.withUnsafeMutableBytes { buffer in
      while done < size, let base = buffer.baseAddress {
        let count = Glibc.read(fd, base + done, size - done)
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

  /// Throws unless `info` is a regular file's, naming what it is instead.
  static func requireRegular(_ info: stat, path: String) throws(WeightError) {
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
