// Running the built `sd` from the tests: where it is, a process runner, and a small generation.

import Foundation
import SDTestSupport

/// The built `sd`, next to the test bundle.
let sdExecutable: URL = {
  let buildFolder = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
  for candidate in [buildFolder, buildFolder.deletingLastPathComponent()] {
    let url = candidate.appendingPathComponent("sd")
    if FileManager.default.isExecutableFile(atPath: url.path) { return url }
  }
  return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent(".build/debug/sd")
}()

let tinyModel = fixturePath("tiny-sd15")

struct RunResult {
  let status: Int32
  let output: String
  let error: String
  /// Standard output as bytes (`--output -` writes the PNG there).
  let outputData: Data
}

/// Runs `sd` with `arguments` (through `sh -c` when `shell` is given, for raw bytes and limits),
/// with `environment` added to this process's.
func runSD(
  _ arguments: [String], shell: String? = nil, environment: [String: String] = [:]
) throws -> RunResult {
  let process = Process()
  process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
  if let shell {
    process.executableURL = URL(fileURLWithPath: "/bin/sh")
    process.arguments = ["-c", shell, sdExecutable.path] + arguments
  } else {
    process.executableURL = sdExecutable
    process.arguments = arguments
  }
  let (output, error) = (Pipe(), Pipe())
  process.standardOutput = output
  process.standardError = error
  try process.run()
  let outputData = output.fileHandleForReading.readDataToEndOfFile()
  let errorData = error.fileHandleForReading.readDataToEndOfFile()
  process.waitUntilExit()
  return RunResult(
    status: process.terminationStatus, output: String(decoding: outputData, as: UTF8.self),
    error: String(decoding: errorData, as: UTF8.self), outputData: outputData)
}

func temporaryFolder() throws -> URL {
  let url = FileManager.default.temporaryDirectory.appendingPathComponent(
    "sd-cli-\(UUID().uuidString)")
  try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
  return url
}

/// A generation on the fixture model small enough to run in a test.
func quick(_ output: URL, _ extra: [String] = []) -> [String] {
  [
    "--model", tinyModel, "--prompt", "a red apple", "--steps", "2", "--width", "64", "--height",
    "64",
    "--quiet", "--output", output.path,
  ] + extra
}

/// Starts a 500-step `sd` run of `size`² pixels writing to `output` and returns once it reports
/// its first step, for the tests that interrupt a run (its standard error is a `Pipe`).
func startLongRun(writing output: URL, size: Int = 64) throws -> Process {
  let process = Process()
  process.executableURL = sdExecutable
  process.arguments = [
    "--model", tinyModel, "--prompt", "x", "--steps", "500", "--width", "\(size)", "--height",
    "\(size)", "--output", output.path,
  ]
  let error = Pipe()
  process.standardError = error
  try process.run()
  var seen = ""
  while !seen.contains("step ") {
    let chunk = error.fileHandleForReading.availableData
    if chunk.isEmpty { break }
    seen += String(decoding: chunk, as: UTF8.self)
  }
  return process
}
