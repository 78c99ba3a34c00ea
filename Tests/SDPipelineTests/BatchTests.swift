// Many images: `sd batch` (sharded over processes, resumable, failing lines reported by number),
// `sd grid` (cells equal to single runs), and the library's runner, grid and prompt cache.

import Foundation
import SDPipeline
import SDTensor
import SDTestSupport
import Testing

/// Six jobs and a blank line: names from line numbers (one with a "name"), option spellings
/// with "_" and "-", a list of negatives with a weight.
private let jobLines = [
  #"{"prompt": "a red apple", "seed": 1}"#,
  #"{"prompt": "a red apple", "seed": 2, "name": "second"}"#,
  "",
  #"{"prompt": "a cat", "negative_prompt": ["blurry", "hands:0.5"], "steps": 3}"#,
  #"{"prompt": "a house", "sampler": "euler-a", "guidance-scale": 5}"#,
  #"{"prompt": "a boat", "seed": 7, "width": 72}"#,
  #"{"prompt": "a tree", "guidance": "nag", "negative-prompt": "leaves"}"#,
]

private let expectedFiles = [
  "00001.png", "00002-second.png", "00004.png", "00005.png", "00006.png", "00007.png",
]

private func writeJobs(_ lines: [String], in folder: URL) throws -> String {
  let path = folder.appendingPathComponent("jobs.jsonl").path
  try Data(lines.joined(separator: "\n").utf8).write(to: URL(fileURLWithPath: path))
  return path
}

private func batchArguments(_ jobs: String, into output: URL, _ extra: [String] = []) -> [String] {
  [
    "batch", jobs, "--model", tinyModel, "--output-dir", output.path, "--steps", "2", "--width",
    "64", "--height", "64", "--quiet",
  ] + extra
}

private func files(in folder: URL) throws -> [String: Data] {
  var contents: [String: Data] = [:]
  for name in try FileManager.default.contentsOfDirectory(atPath: folder.path) {
    contents[name] = try Data(contentsOf: folder.appendingPathComponent(name))
  }
  return contents
}

@Suite(.serialized) struct BatchTests {
  /// Two shards run as two processes at once on one folder write every job exactly once, the
  /// same bytes as one serial run; a rerun generates nothing.
  @Test func shardsTogetherAreTheSerialRun() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let jobs = try writeJobs(jobLines, in: folder)
    let serial = folder.appendingPathComponent("serial")
    let serialRun = try runSD(batchArguments(jobs, into: serial))
    #expect(serialRun.status == 0, "\(serialRun.error)")
    #expect(try files(in: serial).keys.sorted() == expectedFiles)
    let parameters = try PNGText.read(contentsOf: serial.appendingPathComponent("00004.png"))
    #expect(
      parameters["parameters"]?.hasPrefix(
        "a cat\nNegative prompt: blurry, hands\nSteps: 3, Sampler: PLMS, CFG scale: 7.5, Seed: 0, Size: 64x64, Model: tiny-sd15, Negative prompts: \"blurry | hands:0.5\""
      ) == true, "\(parameters)")

    let sharded = folder.appendingPathComponent("sharded")
    let processes = try (0..<2).map { index in
      let process = Process()
      process.executableURL = sdExecutable
      process.arguments = batchArguments(jobs, into: sharded, ["--shard", "\(index)/2"])
      process.standardError = FileHandle.nullDevice
      try process.run()
      return process
    }
    processes.forEach { $0.waitUntilExit() }
    #expect(processes.map(\.terminationStatus) == [0, 0])
    #expect(try files(in: sharded) == files(in: serial))

    let rerun = try runSD(batchArguments(jobs, into: sharded, ["--shard", "1/2"]))
    #expect(rerun.status == 0)
    #expect(rerun.error.contains("0 written, 3 skipped, 0 failed"), "\(rerun.error)")
  }

  /// A failing line is named by its number and the rest go on; the exit status is the number of
  /// failed jobs; a rerun after a file was removed makes only that file.
  @Test func failuresAreCountedAndRerunsResume() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let jobs = try writeJobs(
      [
        jobLines[0], #"{"prompt": "x", "steps": 0}"#, "not json", #"{"prompt": "y", "model": "z"}"#,
        jobLines[1],
      ], in: folder)
    let output = folder.appendingPathComponent("out")
    let first = try runSD(batchArguments(jobs, into: output))
    #expect(first.status == 3, "\(first.error)")
    #expect(first.error.contains("jobs.jsonl:2: --steps must be an integer"), "\(first.error)")
    #expect(first.error.contains("jobs.jsonl:3: invalid JSON"), "\(first.error)")
    #expect(first.error.contains("jobs.jsonl:4: \"model\" is not a job option"), "\(first.error)")
    #expect(first.error.contains("2 written, 0 skipped, 3 failed"), "\(first.error)")
    let written = try files(in: output)
    #expect(written.keys.sorted() == ["00001.png", "00005-second.png"])

    try FileManager.default.removeItem(at: output.appendingPathComponent("00001.png"))
    let second = try runSD(batchArguments(jobs, into: output))
    #expect(second.error.contains("1 written, 1 skipped, 3 failed"), "\(second.error)")
    #expect(try files(in: output) == written)

    for (arguments, message) in [
      (["--shard", "2/2"], "--shard must be I/N"),
      (["--shard", "x"], "--shard must be I/N"),
    ] {
      let refused = try runSD(batchArguments(jobs, into: output, arguments))
      #expect(refused.status == 2 && refused.error.contains(message), "\(refused.error)")
    }
  }

  /// Ctrl-C stops a batch inside its running job: exit 130, a line saying what stays, and no
  /// file for the job that was running.
  @Test func interruptedBatchSaysWhatStays() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let jobs = try writeJobs([#"{"prompt": "x", "steps": 500}"#, jobLines[0]], in: folder)
    let output = folder.appendingPathComponent("out")
    let process = Process()
    process.executableURL = sdExecutable
    process.arguments = [
      "batch", jobs, "--model", tinyModel, "--output-dir", output.path, "--width", "64",
      "--height", "64",
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
    process.interrupt()
    seen += String(decoding: error.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    #expect(process.terminationStatus == 130, "\(seen)")
    #expect(seen.contains("batch cancelled; the 0 images written this run stay"), "\(seen)")
    #expect(try FileManager.default.contentsOfDirectory(atPath: output.path).isEmpty)
  }

  /// Every cell of `sd grid` is the image `sd` makes with the cell's settings, and the grid is
  /// the cells under column labels, beside row labels, above the legend.
  @Test func gridCellsAreSingleRuns() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let cells = folder.appendingPathComponent("cells")
    let grid = folder.appendingPathComponent("grid.png")
    let common = [
      "--model", tinyModel, "--prompt", "a red apple", "--steps", "2", "--width", "64",
      "--height", "64", "--quiet",
    ]
    let result = try runSD(
      ["grid"] + common + [
        "--columns", "negative-prompt=|blurry|green tones", "--rows", "seed=1|2",
        "--output", grid.path, "--cells-dir", cells.path,
      ])
    #expect(result.status == 0, "\(result.error)")
    let single = folder.appendingPathComponent("single.png")
    #expect(
      try runSD(
        common + ["--negative-prompt", "green tones", "--seed", "2", "--output", single.path]
      )
      .status == 0)
    let cell = try RGBImage(contentsOf: cells.appendingPathComponent("row2-col3.png"))
    #expect(try RGBImage(contentsOf: single) == cell)
    let picture = try RGBImage(contentsOf: grid)
    // 64-pixel cells get the 5x7 font at scale 1: label lines of 11 pixels, and a row-label
    // column as wide as "seed: 1" (7 characters of 6 pixels) plus 2 + 2 pixels of margin.
    #expect(picture.width == 46 + 3 * 64)
    // The bottom-right cell: flush with the right edge, below the label line and the first row.
    let (x0, y0) = (picture.width - 64, 11 + 64)
    for (x, y) in [(0, 0), (63, 63), (17, 40)] {
      let a = ((y0 + y) * picture.width + x0 + x) * 3
      let b = (y * 64 + x) * 3
      #expect(Array(picture.pixels[a..<(a + 3)]) == Array(cell.pixels[b..<(b + 3)]))
    }

    for (axis, message) in [
      ("prompt", "must be OPTION=A|B"), ("model=a|b", "is not a generate option"),
      ("truncate=a", "is not a generate option"),
    ] {
      let refused = try runSD(["grid"] + common + ["--columns", axis])
      #expect(refused.status == 2 && refused.error.contains(message), "\(refused.error)")
    }
  }

  /// The library: a grid rendered from jobs, a batch cancelled in its second job (the first
  /// file stays, the second is not written), and prompt encodings shared through a cache with
  /// results identical to encoding afresh.
  @Test func libraryRunnerGridAndCache() throws {
    let pipeline = try StableDiffusionPipeline(modelAt: URL(fileURLWithPath: tinyModel))
    let options = ComputeOptions(threadCount: 2)
    var request = GenerationRequest(prompt: "a red apple", negativePrompt: "blurry", steps: 2)
    (request.width, request.height) = (64, 64)
    let cache = PromptEncodingCache()
    let plain = try pipeline.generate(request, options: options)
    let cached = try pipeline.generate(request, options: options, promptCache: cache)
    let entries = cache.count
    request.seed = 5
    let reseeded = try pipeline.generate(request, options: options, promptCache: cache)
    #expect(cached.image == plain.image)
    #expect(entries >= 2 && cache.count == entries)
    #expect(reseeded.image == (try pipeline.generate(request, options: options).image))

    let runner = BatchRunner(pipeline: pipeline, options: options, modelName: "tiny-sd15")
    let jobs = (0..<4).map { index in
      var cell = request
      cell.seed = UInt64(index)
      return BatchJob(name: "cell\(index)", request: cell)
    }
    let grid = try ComparisonGrid(
      rowLabels: ["a", "b"], columnLabels: ["1", "2"], cells: jobs, legend: "tiny")
    let picture = try grid.render(with: runner)
    // Row labels "a" and "b": one 6-pixel character plus 2 + 2 pixels of margin.
    #expect(picture.width == 10 + 2 * 64)
    #expect(throws: PipelineError.self) {
      try ComparisonGrid(rowLabels: ["a"], columnLabels: ["1"], cells: jobs, legend: "")
    }

    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    var cancellable = options
    cancellable.cancellation = CancellationFlag()
    let stopping = BatchRunner(pipeline: pipeline, options: cancellable, modelName: "tiny")
    var outcomes: [String] = []
    #expect(throws: PipelineError.cancelled) {
      _ = try stopping.run(
        jobs, into: folder,
        progress: { progress in
          if outcomes.count == 1 { cancellable.cancellation?.cancel() }
          return true
        }
      ) { _, job, outcome in
        if case .finished = outcome { outcomes.append(job.name) }
      }
    }
    #expect(outcomes == ["cell0"])
    #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["cell0.png"])
  }
}
