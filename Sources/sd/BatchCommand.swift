// `sd batch JOBS.jsonl --model PATH --output-dir DIR [--shard I/N]`: one generation per line of
// a JSON-lines file, the model loaded once. A line is an object of generate's options
// ({"prompt": "a cat", "seed": 3, "negative-prompt": ["blurry", "hands:0.5"]}) over the defaults
// given on the command line, plus an optional "name"; its image is `<line>[-<name>].png`.

import Foundation
import SDPipeline
import SDTensor

enum BatchCommand {
  /// The batch's own options; generate's request options are accepted as defaults for every line.
  static let ownSpecs: [OptionSpec] = [
    OptionSpec(
      name: "output-dir", valueName: "DIR", defaultValue: nil,
      help: "where the images go; those already there are not generated again"),
    OptionSpec(
      name: "shard", valueName: "I/N", defaultValue: "0/1",
      help: "run only every N-th job starting at job I (0-based), e.g. a Slurm array task"),
    .threads,
    OptionSpec(name: "quiet", valueName: nil, defaultValue: nil, help: "only the summary line"),
  ]

  static var specs: [OptionSpec] {
    ModelOptions.specs + ownSpecs + [LoRAOptions.ignoreUnknown] + GenerateCommand.requestSpecs
      + [.help]
  }

  static let usage = "sd batch JOBS.jsonl --model PATH --output-dir DIR [--shard I/N] [options]"

  /// Exit status: 0 when no job failed, else the number of failed jobs (at most 125); problems
  /// before the first job (options, the jobs file, the model) exit 2.
  static func run(_ words: [String], cancellation: Cancellation) throws -> Int32 {
    guard
      let arguments = try parsedOrHelp(
        words, specs: specs, usage: usage,
        summary:
          "Generate one image per line of a JSON-lines file; a line's keys are the generate options below (\"prompt\", \"seed\", \"negative-prompt\": [..]) plus \"name\". Options given here are every line's defaults."
      )
    else { return 0 }
    guard arguments.positional.count == 1 else {
      throw UsageError("give one JOBS.jsonl file (see sd batch --help)")
    }
    let jobsPath = arguments.positional[0]
    let model = try ModelOptions.model(arguments, allowingPositional: true)
    guard let folderPath = arguments.string("output-dir") else {
      throw UsageError("--output-dir is required")
    }
    let folder = try outputFolder(folderPath)
    let shard = try shard(arguments.string("shard") ?? "0/1")
    let threads = try arguments.threadCount()
    let text: String
    do {
      let bytes = try RegularFile.read(jobsPath, maximumBytes: 256 << 20)
      guard let decoded = String(validating: bytes, as: UTF8.self) else {
        throw UsageError("\(jobsPath): not UTF-8 text")
      }
      text = decoded
    } catch let error as WeightError {
      throw UsageError("\(jobsPath): \(error)")
    }
    let reporter = ProgressReporter(quiet: arguments.has("quiet"))
    // Lines are numbered from 1 in the file; jobs are the non-blank lines, sharded in order.
    let lines = text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
      .filter { !$0.element.allSatisfy(\.isWhitespace) }
    let defaults = arguments.restricted(to: GenerateCommand.requestSpecs)
    var jobs: [BatchJob] = []
    var lineNumbers: [Int] = []
    var failed = 0
    for (position, (index, line)) in lines.enumerated() where shard.contains(position) {
      do {
        jobs.append(try job(String(line), number: index + 1, defaults: defaults))
        lineNumbers.append(index + 1)
      } catch {
        failed += 1
        writeError("sd: \(jobsPath):\(index + 1): \(error)\n")
      }
    }

    var options = Runtime.configure(threads: threads)
    options.cancellation = cancellation.flag
    reporter.note(
      "loading \(model.path); \(jobs.count) jobs of \(lines.count)"
        + (shard.count > 1 ? " (shard \(shard.index)/\(shard.count))" : ""))
    let pipeline = try ModelOptions.load(model, arguments)
    let runner = BatchRunner(
      pipeline: pipeline, options: options, modelName: model.lastPathComponent,
      ignoringUnknownLoRALayers: arguments.has("lora-ignore-unknown"))
    var written = 0
    let report = { (position: Int, job: BatchJob, outcome: BatchOutcome) in
      let where_ = "[\(position + 1)/\(jobs.count)] line \(lineNumbers[position])"
      switch outcome {
      case .finished(_, let seconds, let warnings):
        written += 1
        warnings.forEach { reporter.warn("line \(lineNumbers[position]): \($0)") }
        reporter.note(String(format: "%@: wrote %@.png in %.1f s", where_, job.name, seconds))
      case .skipped: reporter.note("\(where_): \(job.name).png is there already; skipped")
      case .failed(let error):
        writeError("sd: \(jobsPath):\(lineNumbers[position]): \(message(for: error))\n")
      }
    }
    let outcome = Result { () throws(PipelineError) in
      try runner.run(
        jobs, into: folder, progress: reporter.callback(cancellation), report: report)
    }
    if case .failure(.cancelled) = outcome {
      writeError(
        "\nsd: batch cancelled; the \(written) images written this run stay in \(folderPath), the running job wrote nothing (rerun to go on)\n"
      )
      return cancellation.exitStatus
    }
    var summary = try outcome.get()
    summary.failed += failed
    let perImage = summary.finished > 0 ? summary.seconds / Double(summary.finished) : 0
    writeError(
      String(
        format: "batch: %d written, %d skipped, %d failed; %.1f s per image\n", summary.finished,
        summary.skipped, summary.failed, perImage))
    return Int32(min(summary.failed, 125))
  }

  /// The job of one line: its options over `defaults`, named after its line number.
  static func job(_ line: String, number: Int, defaults: ParsedArguments) throws -> BatchJob {
    let object: [String: JSONValue]
    do {
      guard let parsed = try JSONValue.parse(Array(line.utf8)).objectValue else {
        throw UsageError("a line must be a JSON object of options")
      }
      object = parsed
    } catch let error as JSONValue.ParseError {
      throw UsageError("\(error)")
    }
    var words: [String] = []
    var name = String(format: "%05d", number)
    for (key, value) in object.sorted(by: { $0.key < $1.key }) {
      let option = key.replacingOccurrences(of: "_", with: "-")
      if option == "name" {
        guard let text = value.stringValue, isFileNamePart(text) else {
          throw UsageError(
            "\"name\" must be a string of letters, digits, '.', '_' and '-' (at most 100, not starting with '.')"
          )
        }
        name += "-" + text
        continue
      }
      guard GenerateCommand.requestSpecs.contains(where: { $0.name == option }) else {
        throw UsageError(
          "\"\(key)\" is not a job option (the model, output and process options are the batch's)"
        )
      }
      for item in value.arrayValue ?? [value] {
        switch item {
        case .bool(true): words.append("--\(option)")
        case .bool(false), .null: break
        case .string(let text): words += ["--\(option)", text]
        case .integer(let number): words += ["--\(option)", String(number)]
        case .number(let number): words += ["--\(option)", String(number)]
        case .array, .object:
          throw UsageError("\"\(key)\": a value must be a string, number or true")
        }
      }
    }
    let settings = try GenerateCommand.job(
      defaults.overridden(by: try ParsedArguments(words, specs: GenerateCommand.requestSpecs)))
    return settings.batchJob(named: name)
  }

  /// A name safe in a file name on every system: no separators, no leading dot, not too long.
  static func isFileNamePart(_ text: String) -> Bool {
    !text.isEmpty && text.count <= 100 && !text.hasPrefix(".")
      && text.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }
  }

  /// `--output-dir`: created if missing (its parent must exist; shards started together may
  /// race to create it), and writable.
  static func outputFolder(_ path: String) throws(UsageError) -> URL {
    if mkdir(path, 0o755) != 0 && errno != EEXIST {
      throw UsageError("--output-dir: cannot create '\(path)': \(String(cString: strerror(errno)))")
    }
    var isFolder: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder), isFolder.boolValue
    else {
      throw UsageError("--output-dir: '\(path)' is not a folder")
    }
    guard FileManager.default.isWritableFile(atPath: path) else {
      throw UsageError("--output-dir: cannot write into '\(path)'")
    }
    return URL(fileURLWithPath: path, isDirectory: true)
  }

  /// `I/N` with 0 <= I < N.
  static func shard(_ text: String) throws(UsageError) -> BatchShard {
    let parts = text.split(separator: "/", omittingEmptySubsequences: false).map { Int($0) }
    guard parts.count == 2, let index = parts[0], let count = parts[1],
      let shard = try? BatchShard(index: index, count: count)
    else {
      throw UsageError("--shard must be I/N with 0 <= I < N (I counts from 0), got '\(text)'")
    }
    return shard
  }
}
