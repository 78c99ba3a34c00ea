// How much more memory this process can take before an allocation fails, and which limit says
// so: the machine's available memory, the process's address-space and data limits (ulimit -v,
// -d) and its cgroup's memory.max. Swift traps when an allocation fails, so work that a user
// can size asks first (see `StableDiffusionPipeline.generate`).

import CMalloc
import Foundation

/// Memory this process can still allocate, and what bounds it.
public struct AvailableMemory: Sendable {
  /// Bytes that can still be allocated.
  public let bytes: Int
  /// The limit that bounds `bytes`, in words for a message ("the memory the system has free").
  public let limit: String

  /// The tightest of the limits that apply here, or nil where none can be read (not Linux).
  public static func current() -> AvailableMemory? {
    #if os(Linux)
      // Freed blocks the heap keeps (`HeapPolicy`) are reusable by this process in every sense.
      let reusable = Int(mallinfo2().fordblks)
      let status = procValues("/proc/self/status")
      var candidates: [AvailableMemory] = []
      if let free = procValues("/proc/meminfo")["MemAvailable"] {
        candidates.append(.init(bytes: free + reusable, limit: "the memory the system has free"))
      }
      for (resource, used, words) in [
        (RLIMIT_AS, "VmSize", "the address-space limit (ulimit -v)"),
        (RLIMIT_DATA, "VmData", "the data-segment limit (ulimit -d)"),
      ] {
        var bound = rlimit()
        guard getrlimit(__rlimit_resource_t(resource.rawValue), &bound) == 0,
          bound.rlim_cur != rlim_t.max, let used = status[used]
        else { continue }
        let left = Int(clamping: bound.rlim_cur) - used + reusable
        candidates.append(.init(bytes: max(0, left), limit: words))
      }
      if let cgroup = cgroupMemoryLeft() {
        candidates.append(
          .init(bytes: cgroup + reusable, limit: "the container's memory limit (cgroup memory.max)")
        )
      }
      return candidates.min { $0.bytes < $1.bytes }
    #else
      return nil
    #endif
  }

  /// The "Name:   123 kB" lines of a /proc file, in bytes.
  private static func procValues(_ path: String) -> [String: Int] {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [:] }
    var values: [String: Int] = [:]
    for line in text.split(separator: "\n") {
      let parts = line.split(whereSeparator: { $0 == ":" || $0.isWhitespace })
      guard parts.count == 3, parts[2] == "kB", let kilobytes = Int(parts[1]) else { continue }
      values[String(parts[0])] = kilobytes * 1024
    }
    return values
  }

  /// memory.max − memory.current of this process's cgroup (v2), or nil when unlimited.
  private static func cgroupMemoryLeft() -> Int? {
    guard let membership = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8),
      let line = membership.split(separator: "\n").first(where: { $0.hasPrefix("0::") })
    else { return nil }
    let folder = "/sys/fs/cgroup" + line.dropFirst(3)
    func number(_ name: String) -> Int? {
      (try? String(contentsOfFile: "\(folder)/\(name)", encoding: .utf8)).flatMap {
        Int($0.trimmingCharacters(in: .whitespacesAndNewlines))
      }
    }
    guard let maximum = number("memory.max"), let current = number("memory.current") else {
      return nil
    }
    return max(0, maximum - current)
  }
}
