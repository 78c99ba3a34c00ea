// What `sd` does to the paths it writes: standard output with `-`, devices and FIFOs written into
// (never renamed over), links planted beside the output ignored, files that appear during a run
// kept, and no file at all after a signal.

import Foundation
import SDPipeline
import SDTensor
import SDTestSupport
import Testing

private func fileType(_ path: String) -> mode_t? {
  var status = stat()
  return lstat(path, &status) == 0 ? status.st_mode & S_IFMT : nil
}

private func shell(_ command: String) throws -> Int32 {
  let process = Process()
  process.executableURL = URL(fileURLWithPath: "/bin/sh")
  process.arguments = ["-c", command]
  try process.run()
  process.waitUntilExit()
  return process.terminationStatus
}

@Suite(.serialized) struct OutputIntegrityTests {
  /// `--output -` writes the PNG to standard output (progress stays on stderr); a terminal as
  /// standard output is refused.
  @Test func standardOutput() throws {
    let result = try runSD(
      [
        "--model", tinyModel, "--prompt", "a red apple", "--steps", "2", "--width", "64",
        "--height", "64", "--output", "-",
      ])
    #expect(result.status == 0, "\(result.error)")
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let copy = folder.appendingPathComponent("piped.png")
    try result.outputData.write(to: copy)
    let image = try RGBImage(contentsOf: copy)
    #expect(image.width == 64 && image.height == 64)
    #expect(result.error.contains("step 1/"))

    // `script` gives the child a terminal as standard output.
    guard FileManager.default.isExecutableFile(atPath: "/usr/bin/script") else { return }
    let log = folder.appendingPathComponent("terminal.log")
    let status = try shell(
      "/usr/bin/script -qec '\(sdExecutable.path) --model \(tinyModel) --prompt x --output -' \(log.path) > /dev/null"
    )
    #expect(status == 2)
    #expect(try String(contentsOf: log, encoding: .utf8).contains("standard output is a terminal"))
  }

  /// A character device is written into, never replaced by a file: one like /dev/full (made
  /// with mknod in a temporary folder, so a failure cannot harm the real one) gives "No space
  /// left on device" and exit 2, and stays a device.
  @Test(.enabled(if: getuid() == 0)) func deviceIsWrittenIntoNotReplaced() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let full = folder.appendingPathComponent("full").path
    try #require(try shell("mknod '\(full)' c 1 7") == 0)
    let result = try runSD(quick(URL(fileURLWithPath: full), ["--overwrite"]))
    #expect(result.status == 2, "\(result.error)")
    #expect(result.error.contains("No space left on device"), "\(result.error)")
    #expect(fileType(full) == S_IFCHR)
    #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["full"])
  }

  /// A FIFO at `--output --overwrite` gets the PNG and stays a FIFO; without --overwrite it is
  /// refused as existing.
  @Test func fifoGetsTheImage() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let fifo = folder.appendingPathComponent("out.png").path
    try #require(mkfifo(fifo, 0o644) == 0)
    let copy = folder.appendingPathComponent("copy.png").path
    // The reader: cat copies what arrives in the FIFO to a file.
    let reader = Process()
    reader.executableURL = URL(fileURLWithPath: "/bin/sh")
    reader.arguments = ["-c", "cat '\(fifo)' > '\(copy)'"]
    try reader.run()
    let result = try runSD(quick(URL(fileURLWithPath: fifo), ["--overwrite"]))
    if result.status != 0 {
      // sd never opened the FIFO: open and close it so the reader sees the end and exits.
      let fd = open(fifo, O_WRONLY | O_NONBLOCK)
      if fd >= 0 { close(fd) }
    }
    reader.waitUntilExit()
    #expect(result.status == 0, "\(result.error)")
    #expect(fileType(fifo) == S_IFIFO)
    #expect(try RGBImage(contentsOf: URL(fileURLWithPath: copy)).width == 64)
    let refused = try runSD(quick(URL(fileURLWithPath: fifo)))
    #expect(refused.status == 2 && refused.error.contains("exists"), "\(refused.error)")
  }

  /// A symbolic link planted where the old writer put its temporary file does not redirect the
  /// write; a dangling link at the output counts as existing; with --overwrite, a link to a file
  /// keeps pointing at that file, which now holds the image.
  @Test func linksAreNotFollowedIntoOtherFiles() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let victim = folder.appendingPathComponent("victim.txt")
    try Data("precious".utf8).write(to: victim)
    let output = folder.appendingPathComponent("s.png")
    let planted = try runSD(
      quick(output),
      shell: "ln -s '\(victim.path)' '\(output.path)'.partial-$$; exec \"$0\" \"$@\"")
    #expect(planted.status == 0, "\(planted.error)")
    #expect(try String(contentsOf: victim, encoding: .utf8) == "precious")
    #expect(try RGBImage(contentsOf: output).width == 64)

    let dangling = folder.appendingPathComponent("dangling.png")
    try FileManager.default.createSymbolicLink(
      atPath: dangling.path, withDestinationPath: folder.appendingPathComponent("nothing").path)
    let refused = try runSD(quick(dangling))
    #expect(refused.status == 2 && refused.error.contains("exists"), "\(refused.error)")

    let link = folder.appendingPathComponent("link.png")
    try FileManager.default.createSymbolicLink(atPath: link.path, withDestinationPath: victim.path)
    #expect(try runSD(quick(link, ["--overwrite"])).status == 0)
    #expect(fileType(link.path) == S_IFLNK)
    #expect(try RGBImage(contentsOf: victim).width == 64)
  }

  /// Without --overwrite the final step fails if the path appeared while the image was made
  /// (checked atomically with link(2)); the file that appeared is kept and no temporary is left.
  @Test func fileAppearingDuringTheWriteIsKept() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let path = folder.appendingPathComponent("d.png").path
    let pending = try AtomicFile.prepare(Array("new".utf8), to: path, existing: .keep)
    try Data("precious".utf8).write(to: URL(fileURLWithPath: path))
    #expect(throws: WeightError.destinationExists(path: path)) { try pending.commit() }
    #expect(try String(contentsOfFile: path, encoding: .utf8) == "precious")
    #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["d.png"])
    // Replacing is allowed when asked, and a plain write without a competitor works.
    try AtomicFile.write(Array("new".utf8), to: path, existing: .replace)
    #expect(try String(contentsOfFile: path, encoding: .utf8) == "new")
  }

  /// SIGTERM stops the run like Ctrl-C: exit 143, no output, nothing left in the folder.
  @Test func terminationLeavesNothing() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let output = folder.appendingPathComponent("out.png")
    let process = try startLongRun(writing: output)
    process.terminate()
    process.waitUntilExit()
    #expect(process.terminationStatus == 143)
    #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).isEmpty)
  }

  /// Ctrl-C inside a long step is answered inside it (the models check between blocks and
  /// between attention query blocks): a 768x768 step of the tiny model takes seconds, and the
  /// step that was running when the signal came never reports.
  @Test func interruptStopsInsideAStep() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let process = try startLongRun(writing: folder.appendingPathComponent("out.png"), size: 768)
    process.interrupt()
    process.waitUntilExit()
    let error = try #require(process.standardError as? Pipe)
    let rest = String(decoding: error.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    #expect(process.terminationStatus == 130, "\(rest)")
    #expect(!rest.contains("step 2/"), "\(rest)")
    #expect(rest.contains("cancelled; no output written"), "\(rest)")
    #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).isEmpty)
  }

  /// Outputs committed together land all or none: when the second cannot take its place (its
  /// path appeared meanwhile), the first is taken back, whether it was new or replaced a file.
  @Test func outputsAreCommittedAllOrNone() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let (image, heatMap) = (
      folder.appendingPathComponent("image.png").path,
      folder.appendingPathComponent("effect.png").path
    )
    for existingImage in [false, true] {
      if existingImage { try Data("old image".utf8).write(to: URL(fileURLWithPath: image)) }
      let writes = [
        try AtomicFile.prepare(
          Array("new image".utf8), to: image, existing: existingImage ? .replace : .keep),
        try AtomicFile.prepare(Array("new effect".utf8), to: heatMap, existing: .keep),
      ]
      try Data("precious".utf8).write(to: URL(fileURLWithPath: heatMap))
      #expect(throws: WeightError.destinationExists(path: heatMap)) {
        try AtomicFile.commitAll(writes)
      }
      #expect(try String(contentsOfFile: heatMap, encoding: .utf8) == "precious")
      let names = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()
      if existingImage {
        #expect(try String(contentsOfFile: image, encoding: .utf8) == "old image")
        #expect(names == ["effect.png", "image.png"])
      } else {
        #expect(names == ["effect.png"])
      }
      try FileManager.default.removeItem(atPath: heatMap)
    }
    // Without a competitor both land, and no second name of the replaced file stays behind.
    try AtomicFile.commitAll([
      try AtomicFile.prepare(Array("new image".utf8), to: image, existing: .replace),
      try AtomicFile.prepare(Array("new effect".utf8), to: heatMap, existing: .keep),
    ])
    #expect(try String(contentsOfFile: image, encoding: .utf8) == "new image")
    #expect(try String(contentsOfFile: heatMap, encoding: .utf8) == "new effect")
    #expect(
      try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted() == [
        "effect.png", "image.png",
      ])
  }

  /// --negative-effect naming the --output file is refused before any work.
  @Test func heatMapAndImageMayNotShareAPath() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let output = folder.appendingPathComponent("x.png")
    let result = try runSD(
      quick(output, ["--negative-prompt", "blue", "--negative-effect", output.path]))
    #expect(result.status == 2)
    #expect(result.error.hasPrefix("sd: --negative-effect:"), "\(result.error)")
    var withSlash = quick(output)
    withSlash[withSlash.count - 1] = output.path + "/"
    let slash = try runSD(withSlash)
    #expect(slash.status == 2 && slash.error.contains("not a file name"), "\(slash.error)")
  }
}
