// The `sd` command line: generate (default), batch, grid, tokenize, verify. Errors are one line on stderr; bad input
// exits with status 2, a failed run with 1, Ctrl-C with 130.

import CPUCompatibility
import Foundation
import SDPipeline
import SDTensor

// Before anything compiled for the build's vector ISA runs: a CPU without it gets one line, not
// SIGILL (exit 1).
CPUCompatibility.exitIfUnsupported(program: "sd")

let version = "0.2.8"

/// The raw arguments, refusing any that are not valid UTF-8 (Swift would silently repair them).
func validatedArguments() throws(UsageError) -> [String] {
  var words: [String] = []
  for index in 1..<Int(CommandLine.argc) {
    guard let raw = CommandLine.unsafeArgv[index] else { continue }
    let bytes = UnsafeBufferPointer(
      start: UnsafeRawPointer(raw).assumingMemoryBound(to: UInt8.self), count: strlen(raw))
    guard let word = String(validating: bytes, as: UTF8.self) else {
      throw UsageError("argument \(index) is not valid UTF-8")
    }
    words.append(word)
  }
  return words
}

// A write past a file-size limit (or a full quota) then fails with an error we report, instead
// of SIGXFSZ killing the process.
signal(SIGXFSZ, SIG_IGN)
// With `--output -` a reader that goes away gives EPIPE, reported as a failed write.
signal(SIGPIPE, SIG_IGN)
let cancellation = Cancellation()
let signalSources = cancellation.installSignalHandlers()
let status: Int32
do {
  let words = try validatedArguments()
  switch words.first {
  case "--version": print("sd \(version)"); status = 0
  case "tokenize": status = try TokenizeCommand.run(Array(words.dropFirst()))
  case "verify": status = try VerifyCommand.run(Array(words.dropFirst()))
  case "batch": status = try BatchCommand.run(Array(words.dropFirst()), cancellation: cancellation)
  case "grid": status = try GridCommand.run(Array(words.dropFirst()), cancellation: cancellation)
  case "generate":
    status = try GenerateCommand.run(Array(words.dropFirst()), cancellation: cancellation)
  default: status = try GenerateCommand.run(words, cancellation: cancellation)
  }
} catch let error as UsageError {
  writeError("sd: \(error.description)\n")
  status = 2
} catch PipelineError.cancelled {
  writeError("\nsd: cancelled; no output written\n")
  status = cancellation.exitStatus
} catch let error as PipelineError {
  writeError("sd: \(message(for: error))\n")
  // Bad requests and inputs are the user's to fix (2); anything else is a failed run (1).
  switch error {
  case .invalidArgument, .unreadableImage, .model, .invalidSchedulerConfiguration,
    .unwritableOutput, .outputExists, .insufficientMemory:
    status = 2
  default: status = 1
  }
} catch {
  writeError("sd: \(error)\n")
  status = 2
}
signalSources.forEach { $0.cancel() }
exit(status)
