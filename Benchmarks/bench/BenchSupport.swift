// Timing, argument parsing and reporting for the benchmark.

import CBLAS
import Foundation
import SDTensor

/// Command-line options of `bench`.
struct BenchArguments {
  var threads = ProcessInfo.processInfo.activeProcessorCount
  var steps = 2
  var weights: String?
  var kernelsOnly = false
  var skipLarge = false
  var pytorchBaseline: String?
  /// Timed runs of the 64×64 UNet (median reported).
  var unetRuns = 1
  /// Only the sgemm peak and the UNet (for optimisation work).
  var unetOnly = false
  /// Pairs of 64×64 UNet steps alternated with PyTorch's (0: none).
  var interleavedPairs = 0
  /// Only the sgemm peak and the VAE decoder and encoder (for optimisation work).
  var vaeOnly = false
  /// Image size of the txt2img run.
  var size = 512
  /// Keep layer weights in half precision in memory.
  var halfPrecisionWeights = false
  /// The model whose full-size shapes are timed: SD 1.5 (default) or SDXL base.
  var modelType = ModelType.sd15
  /// SDXL: where the synthetic fp16 folder is written and kept between runs (default: a
  /// temporary folder, removed at the end).
  var weightsCache: String?
  /// SDXL: widen the fp16 files' weights to fp32 in memory instead of using them in place.
  var fullPrecisionWeights = false

  /// The model family `--model-type` names.
  enum ModelType: String {
    case sd15
    case sdxl
  }

  static func parse(_ words: ArraySlice<String>) -> BenchArguments {
    var result = BenchArguments()
    var iterator = words.makeIterator()
    var sizeGiven = false
    while let word = iterator.next() {
      func value() -> String {
        guard let next = iterator.next() else { fail("\(word) needs a value") }
        return next
      }
      func positive() -> Int {
        guard let number = Int(value()), number > 0 else {
          fail("\(word) takes a positive integer")
        }
        return number
      }
      switch word {
      case "--threads": result.threads = positive()
      case "--steps": result.steps = positive()
      case "--weights": result.weights = value()
      case "--kernels-only": result.kernelsOnly = true
      case "--skip-large": result.skipLarge = true
      case "--pytorch": result.pytorchBaseline = value()
      case "--unet-runs": result.unetRuns = positive()
      case "--unet-only": result.unetOnly = true
      case "--interleave": result.interleavedPairs = positive()
      case "--vae-only": result.vaeOnly = true
      case "--fp16-weights": result.halfPrecisionWeights = true
      case "--fp32-weights": result.fullPrecisionWeights = true
      case "--weights-cache": result.weightsCache = value()
      case "--model-type":
        let name = value()
        guard let type = ModelType(rawValue: name) else {
          fail("--model-type takes sd15 or sdxl (found \(name))")
        }
        result.modelType = type
      case "--size":
        result.size = positive()
        sizeGiven = true
        if result.size % 8 != 0 { fail("--size must be a multiple of 8") }
      case "--help", "-h":
        print(
          """
          usage: bench [--threads N] [--steps N] [--weights DIR] [--kernels-only] [--skip-large]
                       [--pytorch BASELINE.json] [--unet-runs N] [--unet-only] [--vae-only]
                       [--interleave N]
                       [--size N] [--fp16-weights] [--model-type sd15|sdxl]
                       [--weights-cache DIR] [--fp32-weights]
            --threads N      threads for our kernels (default: CPU count)
            --steps N        denoising steps timed in the txt2img run (default 2; 20 is projected)
            --weights DIR    a diffusers SD folder; default: synthetic SD 1.5 weights
            --kernels-only   only the sgemm, conv and attention kernels
            --skip-large     skip the 64x64-latent UNet and the VAE decode
            --pytorch FILE   JSON from Benchmarks/pytorch_baseline.py, to print ours/PyTorch ratios;
                             "--pytorch run" runs that script first, in this invocation
            --unet-runs N    timed runs of the 64x64 UNet, median reported (default 1)
            --unet-only      only the sgemm peak and the UNet
            --interleave N   N pairs of 64x64 UNet steps, each PyTorch's (a python3 process kept
                             alive beside this one) right before ours: the ratio of each pair, and
                             their median, from the same minutes of a shared host
            --vae-only       only the sgemm peak and the VAE decoder and encoder
            --size N         image size of the txt2img run (default 512; above 768 the VAE decodes in tiles)
            --fp16-weights   keep layer weights in half precision in memory
            --model-type T   sd15 (default) or sdxl: SDXL base at 1024x1024 from a diffusers folder
                             of synthetic fp16 weights (written first, ~6.9 GB) used in place:
                             both text encoders, a CFG UNet step, the tiled VAE decode, a txt2img
            --weights-cache DIR  sdxl: write the synthetic folder here and keep it for the next run
            --fp32-weights   sdxl: widen the fp16 weights to fp32 in memory (~14 GB)
          """)
        exit(0)
      default: fail("unknown option \(word) (see --help)")
      }
    }
    if result.modelType == .sdxl && !sizeGiven { result.size = 1024 }
    return result
  }
}

func fail(_ message: String) -> Never {
  printError("bench: \(message)")
  exit(2)
}

func printError(_ message: String) {
  FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// Median wall time of `runs` calls after one warm-up call.
func timeMedian(runs: Int, warmUp: Bool = true, _ body: () throws -> Void) rethrows -> Double {
  if warmUp { try body() }
  var times: [Double] = []
  for _ in 0..<runs {
    let start = DispatchTime.now().uptimeNanoseconds
    try body()
    times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
  }
  return median(times)
}

/// The median as Python's `statistics.median` takes it (the PyTorch baseline's): for an even
/// count, the mean of the two middle values, so 2 timed runs or step intervals give their mean.
func median(_ values: [Double]) -> Double {
  let sorted = values.sorted()
  let middle = sorted.count / 2
  return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}

/// A deterministic tensor of small values for timing.
func benchTensor(_ shape: [Int]) -> Tensor {
  let count = shape.reduce(1, *)
  return Tensor(shape: shape, scalars: (0..<count).map { Float(($0 * 7919) % 2001) / 1000 - 1 })
}

/// A guided step's UNet input `[2, 4, side, side]`: one latent in both rows (negative and
/// positive prompt), as the pipeline builds it, so the bench's step computes what a CFG step
/// computes (the two rows once each until the first cross-attention reads the text).
func guidedSample(side: Int) -> Tensor {
  let latent = benchTensor([1, 4, side, side])
  return concatenate([latent, latent], axis: 0)
}

/// One m×k·k×n sgemm, ready to be called again and again: its operands made once.
struct Product {
  let flops: Double
  let call: () -> Void

  /// Ours, through `matmul`.
  static func ours(m: Int, k: Int, n: Int, options: ComputeOptions) -> Product {
    let a = benchTensor([m, k])
    let b = benchTensor([k, n])
    return Product(flops: 2.0 * Double(m * n * k)) { _ = matmul(a, b, options: options) }
  }

  /// OpenBLAS's own sgemm on `threads` of its threads, for the same-run comparison (the library
  /// itself does not call it in builds that have our GEMM).
  static func openBLAS(m: Int, k: Int, n: Int, threads: Int) -> Product {
    let a = benchTensor([m, k]).scalars
    let b = benchTensor([k, n]).scalars
    var c = [Float](repeating: 0, count: m * n)
    return Product(flops: 2.0 * Double(m * n * k)) {
      openblas_set_num_threads(Int32(threads))
      defer { openblas_set_num_threads(1) }
      cblas_sgemm(
        CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), 1, a, Int32(k),
        b, Int32(n), 0, &c, Int32(n))
    }
  }

  /// GFLOP/s over the median of five calls.
  var rate: Double { flops / timeMedian(runs: 5, call) / 1e9 }
}

/// Peak resident set size of this process (VmHWM), in bytes.
func peakResidentBytes() -> Int { statusKilobytes("VmHWM:") * 1024 }

/// Resident set size of this process now (VmRSS), in bytes.
func residentBytes() -> Int { statusKilobytes("VmRSS:") * 1024 }

/// Starts a new peak for `peakResidentBytes` at the current resident size (Linux's
/// `clear_refs` value 5 resets VmHWM), so a phase's own peak can be read.
func resetPeakResidentBytes() {
  try? Data("5".utf8).write(to: URL(fileURLWithPath: "/proc/self/clear_refs"))
}

/// A "kB" field of /proc/self/status, or 0.
private func statusKilobytes(_ field: String) -> Int {
  guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else {
    return 0
  }
  for line in status.split(separator: "\n") where line.hasPrefix(field) {
    // "VmHWM:\t  502020 kB", but "VmHWM:\t14668748 kB" from 10 GB on: no space after the tab.
    return line.split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { Int($0) }.first
      ?? 0
  }
  return 0
}

/// Calls of the attention interleaved with the peak's own product (main.swift), and the key of
/// the median of their shares of it, a percentage, in `BenchReport.extra`.
let attentionPairCount = 9
let attentionPairsKey =
  "attention 2x8x4096x40 % of the peak's product, median of \(attentionPairCount) interleaved pairs"

/// Collected measurements: a table for people and a JSON line for machines.
struct BenchReport {
  struct Row {
    var name: String
    var seconds: Double?
    var gflops: Double?
  }

  var threads: Int
  var rows: [Row] = []
  var peakGFLOPS = 0.0
  var peakResidentBytes = 0
  var extra: [String: Double] = [:]
  var notes: [String] = []

  mutating func add(_ name: String, gflops: Double) {
    rows.append(Row(name: name, seconds: nil, gflops: gflops))
  }

  mutating func add(_ name: String, seconds: Double, flops: Double? = nil) {
    rows.append(Row(name: name, seconds: seconds, gflops: flops.map { $0 / seconds / 1e9 }))
    printError(line(rows[rows.count - 1]))
  }

  func line(_ row: Row) -> String {
    var text = row.name.padding(toLength: 44, withPad: " ", startingAt: 0)
    if let seconds = row.seconds {
      text += String(format: " %9.3f s", seconds)
    } else {
      text += "            "
    }
    if let gflops = row.gflops {
      text += String(format: " %8.1f GFLOP/s", gflops)
      if peakGFLOPS > 0 {
        text += String(format: " %5.1f%% of sgemm peak", 100 * gflops / peakGFLOPS)
      }
    }
    return text
  }

  var table: String {
    var lines = ["", "== bench (\(threads) threads) =="] + rows.map(line)
    // Keys in full (the interleaved ratios' names run to 80 characters), values in one column.
    let width = extra.keys.map(\.count).max() ?? 0
    lines += extra.keys.sorted().map {
      String(
        format: "%@ %.3f", $0.padding(toLength: width, withPad: " ", startingAt: 0),
        extra[$0] ?? 0)
    }
    lines.append(
      String(format: "peak resident memory               %.2f GB", Double(peakResidentBytes) / 1e9))
    return (lines + notes).joined(separator: "\n")
  }

  /// The few figures a reader looks for first, printed last before the JSON: the machine's
  /// peak, attention against it, the UNet step, seconds per image, the VAE, and memory; with
  /// PyTorch's time and the ratio where the baseline ran.
  var summary: String {
    let wanted = [
      "attention 2x8x4096x40", "UNet batch 2 latent 64x64", "VAE decode", "TAESD decode",
      "txt2img", "SDXL",
    ]
    var lines = [
      "", "== summary ==",
      String(format: "sgemm peak %.1f GFLOP/s on %d threads", peakGFLOPS, threads),
    ]
    for row in rows where wanted.contains(where: { row.name.hasPrefix($0) }) {
      guard let seconds = row.seconds,
        !row.name.contains("text encoding") && !row.name.hasSuffix("VAE decode")
      else { continue }
      var line =
        row.name.padding(toLength: 44, withPad: " ", startingAt: 0)
        + String(format: " %8.2f s", seconds)
      if let gflops = row.gflops, peakGFLOPS > 0 {
        line += String(format: "  %5.1f%% of peak", 100 * gflops / peakGFLOPS)
      }
      if let theirs = extra["pytorch seconds \(row.name)"] {
        line += String(format: "  PyTorch %.2f s, ratio %.2f", theirs, seconds / theirs)
      }
      if row.name == "attention 2x8x4096x40", let share = extra[attentionPairsKey] {
        line += String(format: " (interleaved with the peak's product: %.1f%%)", share)
      }
      if let pairs = extra["ratio ours/pytorch \(row.name), median of pairs"] {
        line += String(format: " (median of pairs %.2f)", pairs)
      }
      lines.append(line)
    }
    lines.append(String(format: "peak resident memory %.2f GB", Double(peakResidentBytes) / 1e9))
    return lines.joined(separator: "\n")
  }

  /// Adds "ours/PyTorch" ratios for every row the baseline also timed.
  mutating func compare(withBaseline baseline: JSONValue) {
    for row in rows {
      guard let seconds = row.seconds, let theirs = baseline[row.name]?.doubleValue, theirs > 0
      else { continue }
      extra["ratio ours/pytorch \(row.name)"] = seconds / theirs
      extra["pytorch seconds \(row.name)"] = theirs
    }
    if let rss = baseline["peak_rss_bytes"]?.doubleValue {
      extra["pytorch peak rss GB"] = rss / 1e9
    }
  }

  var json: String {
    var fields: [String: JSONValue] = [
      "threads": .integer(threads), "sgemm_peak_gflops": .number(peakGFLOPS),
      "peak_rss_bytes": .integer(peakResidentBytes), "matrix_kernel": .string(Runtime.matrixKernel),
      "commit": .string(gitCommit()),
    ]
    for row in rows {
      var entry: [String: JSONValue] = [:]
      if let seconds = row.seconds { entry["seconds"] = .number(seconds) }
      if let gflops = row.gflops {
        entry["gflops"] = .number(gflops)
        if peakGFLOPS > 0 { entry["fraction_of_peak"] = .number(gflops / peakGFLOPS) }
      }
      fields[row.name] = .object(entry)
    }
    for (key, value) in extra { fields[key] = .number(value) }
    #if DEBUG
      fields["debug_build"] = .bool(true)
    #endif
    return JSONValue.object(fields).serialized
  }
}

/// The current commit, when run inside the repository.
func gitCommit() -> String {
  let process = Process()
  process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
  process.arguments = ["git", "rev-parse", "--short", "HEAD"]
  let pipe = Pipe()
  process.standardOutput = pipe
  process.standardError = FileHandle.nullDevice
  guard (try? process.run()) != nil else { return "unknown" }
  process.waitUntilExit()
  let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
  return text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
    ? "unknown" : text.trimmingCharacters(in: .whitespacesAndNewlines)
}

/// Runs Benchmarks/pytorch_baseline.py (needs python3 with torch and diffusers) and parses its
/// JSON, or reads a JSON file it wrote earlier.
func pytorchBaseline(
  _ source: String, threads: Int, skipLarge: Bool, modelType: BenchArguments.ModelType = .sd15,
  unetRuns: Int = 1
) -> JSONValue? {
  var data: Data?
  if source == "run" {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments =
      ["python3", "Benchmarks/pytorch_baseline.py", "--threads", String(threads)]
      + (skipLarge ? ["--skip-large"] : [])
      + (modelType == .sd15
        ? [] : ["--model-type", modelType.rawValue, "--unet-runs", String(unetRuns)])
    let pipe = Pipe()
    process.standardOutput = pipe
    printError("bench: running the PyTorch baseline first (same shapes, \(threads) threads)")
    guard (try? process.run()) != nil else { printError("bench: cannot run python3"); return nil }
    data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
      printError("bench: the PyTorch baseline failed"); return nil
    }
  } else {
    data = FileManager.default.contents(atPath: source)
  }
  guard let data, let json = try? JSONValue.parse(data) else {
    printError("bench: no PyTorch baseline JSON in \(source)")
    return nil
  }
  printError(
    "bench: PyTorch \(json["torch"]?.stringValue ?? "?"), ATen vector ISA "
      + "\(json["cpu_capability"]?.stringValue ?? "?"), oneDNN ISA cap "
      + "\(json["onednn_max_cpu_isa"]?.stringValue ?? "?")")
  return json
}

/// PyTorch's SD 1.5 UNet in a python3 process kept alive beside the bench
/// (`pytorch_baseline.py --serve-unet`): each `step()` runs one CFG step there and returns its
/// seconds, so the bench can alternate PyTorch's steps with its own.
final class PyTorchUNetServer {
  private let process = Process()
  private let input = Pipe()
  private let output = Pipe()
  private var buffered = Data()

  /// Starts the process and waits until its model is built and warmed up; nil (with the reason
  /// printed) when python3, torch or diffusers are missing.
  init?(latentSize: Int, threads: Int) {
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = [
      "python3", "Benchmarks/pytorch_baseline.py", "--threads", String(threads), "--serve-unet",
      String(latentSize),
    ]
    process.standardInput = input
    process.standardOutput = output
    guard (try? process.run()) != nil else {
      printError("bench: cannot run python3")
      return nil
    }
    guard readLine() == "ready" else {
      printError("bench: the PyTorch UNet process did not start (is torch installed?)")
      return nil
    }
  }

  deinit {
    try? input.fileHandleForWriting.close()
    process.waitUntilExit()
  }

  /// Seconds of one PyTorch UNet step, or nil if the process has gone.
  func step() -> Double? {
    guard (try? input.fileHandleForWriting.write(contentsOf: Data("step\n".utf8))) != nil else {
      return nil
    }
    return readLine().flatMap(Double.init)
  }

  /// The next line the process prints, without its newline; nil at its end.
  private func readLine() -> String? {
    while true {
      if let newline = buffered.firstIndex(of: UInt8(ascii: "\n")) {
        let line = String(decoding: buffered[..<newline], as: UTF8.self)
        buffered.removeSubrange(...newline)
        return line
      }
      let chunk = output.fileHandleForReading.availableData
      if chunk.isEmpty { return nil }
      buffered.append(chunk)
    }
  }
}
