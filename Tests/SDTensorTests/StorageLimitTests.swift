// What the storage layer refuses without being stopped by it: FIFOs and devices in place of
// files (a FIFO would block `open` forever), oversized safetensors headers and entry counts.

import Foundation
import SDTestSupport
import SDTensor
import Testing

@Suite struct StorageLimitTests {
  @Test func fifoAndDeviceAreNamedNotRead() throws {
    let directory = try TemporaryDirectory()
    let fifo = directory.path("unet.safetensors")
    try #require(mkfifo(fifo, 0o644) == 0)
    for path in [fifo, "/dev/zero"] {
      #expect {
        _ = try SafeTensorsFile(path: path)
      } throws: { "\($0)".contains("not a regular file") }
      #expect {
        _ = try RegularFile.read(path)
      } throws: { "\($0)".contains("not a regular file") }
    }
    #expect { _ = try RegularFile.read(directory.url.path) } throws: {
      "\($0)".contains("a folder")
    }
  }

  @Test func headerSizeAndEntryCountAreBounded() throws {
    let directory = try TemporaryDirectory()
    // A header declared larger than a checkpoint needs is refused before it is parsed.
    let big = directory.path("big.safetensors")
    let padding = String(repeating: " ", count: 17 << 20)
    try Data(safetensorsBytes(header: "{}" + padding, data: [])).write(
      to: URL(fileURLWithPath: big))
    #expect { _ = try SafeTensorsFile(path: big) } throws: { "\($0)".contains("16 MB") }
    // 70 000 zero-size entries: a small header, but more tensors than any checkpoint has.
    let many = directory.path("many.safetensors")
    let entries = (0..<70_000).map {
      #""t\#($0)":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}"#
    }
    try Data(safetensorsBytes(header: "{" + entries.joined(separator: ",") + "}", data: []))
      .write(to: URL(fileURLWithPath: many))
    #expect { _ = try SafeTensorsFile(path: many) } throws: { "\($0)".contains("70000 entries") }
  }
}
