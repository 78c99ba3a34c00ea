// Many generations on one loaded model: a list of jobs in, one result per job out through a
// callback, optionally written as PNGs into a folder. Jobs whose file is already there are
// skipped, so a batch that stopped resumes where it was, and several processes given disjoint
// shards of one list fill one folder without a coordinator.

import Foundation
import SDModels
import SDTensor

/// A LoRA file and the scale to apply it at.
public struct LoRAFile: Sendable, Hashable {
  /// The LoRA's .safetensors file.
  public var url: URL
  /// The scale it is merged at.
  public var scale: Float

  /// `url` at `scale`.
  public init(url: URL, scale: Float = 1) {
    self.url = url
    self.scale = scale
  }
}

/// One image of a batch.
public struct BatchJob: Sendable {
  /// The output file's name without ".png" (unique within a batch).
  public var name: String
  /// What to generate.
  public var request: GenerationRequest
  /// LoRAs applied for this job; consecutive jobs with the same list share one merge.
  public var loras: [LoRAFile]
  /// The prompt as the user wrote it (LoRA tags included) for the PNG's parameters; nil: the
  /// request's prompt.
  public var promptAsWritten: String?

  /// A job writing `<name>.png`.
  public init(
    name: String, request: GenerationRequest, loras: [LoRAFile] = [],
    promptAsWritten: String? = nil
  ) {
    self.name = name
    self.request = request
    self.loras = loras
    self.promptAsWritten = promptAsWritten
  }
}

/// Every `count`-th job starting at `index` (0-based), the split a Slurm array task
/// (`SLURM_ARRAY_TASK_ID`/`SLURM_ARRAY_TASK_COUNT` with `--array=0-(N-1)`) or a Kubernetes indexed
/// Job (`JOB_COMPLETION_INDEX`) takes of one list.
public struct BatchShard: Sendable, Equatable {
  /// Which shard this is, from 0.
  public let index: Int
  /// How many shards the list is split into.
  public let count: Int

  /// The whole list.
  public static let all = BatchShard(uncheckedIndex: 0, count: 1)

  /// - Throws: `PipelineError.invalidArgument` unless `0 <= index < count`.
  public init(index: Int, count: Int) throws(PipelineError) {
    guard count >= 1, (0..<count).contains(index) else {
      throw .invalidArgument(
        name: "shard", reason: "\(index)/\(count) needs 0 <= I < N (I counts from 0)")
    }
    self.init(uncheckedIndex: index, count: count)
  }

  private init(uncheckedIndex index: Int, count: Int) {
    self.index = index
    self.count = count
  }

  /// Whether the job at `position` (0-based, in list order) belongs to this shard.
  public func contains(_ position: Int) -> Bool { position % count == index }
}

/// What became of one job.
public enum BatchOutcome: Sendable {
  /// Generated (and written, when the batch has a folder) in `seconds`.
  case finished(GenerationResult, seconds: Double, warnings: [String])
  /// Its file was there already (an earlier run, or another process): not generated again.
  case skipped
  /// It failed; the batch went on with the next job.
  case failed(PipelineError)
}

/// The counts of a batch run.
public struct BatchSummary: Sendable, Equatable {
  /// Jobs generated (and written).
  public var finished = 0
  /// Jobs whose file was already there.
  public var skipped = 0
  /// Jobs that failed.
  public var failed = 0
  /// Wall-clock seconds of the finished jobs (LoRA merges included).
  public var seconds = 0.0

  /// All counts zero.
  public init() {}
}

/// Runs batch jobs on one pipeline, in order, one at a time (each generation uses every thread
/// of `options`).
public struct BatchRunner: Sendable {
  /// The loaded model every job runs on (LoRAs are merged into copies).
  public let pipeline: StableDiffusionPipeline
  /// Threads and cancellation for every generation.
  public let options: ComputeOptions
  /// Written into the PNG parameters' "Model:".
  public let modelName: String
  /// Skip LoRA layers the model lacks (reported in the outcome's warnings) instead of failing.
  public let ignoringUnknownLoRALayers: Bool

  /// A runner on `pipeline`; `modelName` goes into every PNG's parameters.
  public init(
    pipeline: StableDiffusionPipeline, options: ComputeOptions, modelName: String,
    ignoringUnknownLoRALayers: Bool = false
  ) {
    self.pipeline = pipeline
    self.options = options
    self.modelName = modelName
    self.ignoringUnknownLoRALayers = ignoringUnknownLoRALayers
  }

  /// The file a job becomes in `folder`.
  public static func file(of job: BatchJob, in folder: URL) -> URL {
    folder.appendingPathComponent(job.name + ".png")
  }

  /// Runs `jobs`, reporting each outcome with the job's position in `jobs`. With a `folder`
  /// each finished image is written there atomically (never replacing a file: one that appears
  /// meanwhile makes the job count as skipped) and jobs whose file exists are skipped. A failed
  /// job is reported and the next one runs.
  /// - Parameters:
  ///   - jobs: the jobs, in order.
  ///   - folder: where the images go; nil: nothing is written.
  ///   - report: called with each job's position in `jobs`, the job and its outcome.
  ///   - progress: each generation's step callback (false cancels the batch).
  /// - Throws: `PipelineError.cancelled` when cancelled (by `options.cancellation` or
  ///   `progress`): the running job writes nothing, finished files stay.
  public func run(
    _ jobs: [BatchJob], into folder: URL?,
    progress: ((GenerationProgress) -> Bool)? = nil,
    report: (_ position: Int, _ job: BatchJob, _ outcome: BatchOutcome) -> Void
  ) throws(PipelineError) -> BatchSummary {
    var summary = BatchSummary()
    var adapted = AdaptedPipeline(base: pipeline)
    for (position, job) in jobs.enumerated() {
      if options.isCancelled { throw .cancelled }
      let file = folder.map { Self.file(of: job, in: $0) }
      if let file, FileManager.default.fileExists(atPath: file.path) {
        summary.skipped += 1
        report(position, job, .skipped)
        continue
      }
      let start = Date()
      do throws(PipelineError) {
        let (pipeline, warnings) = try adapted.pipeline(
          for: job.loras, ignoringUnknownLayers: ignoringUnknownLoRALayers)
        let result = try pipeline.generate(
          job.request, options: options, promptCache: adapted.promptCache, progress: progress)
        if let file {
          let parameters = job.request.parametersText(
            sampler: result.sampler, width: result.image.width, height: result.image.height,
            modelName: modelName, promptAsWritten: job.promptAsWritten)
          do throws(PipelineError) {
            try result.image.writePNG(
              to: file, text: [("parameters", parameters)], replacing: false,
              commit: { !options.isCancelled })
          } catch {
            guard case .outputExists = error else { throw error }
            summary.skipped += 1
            report(position, job, .skipped)
            continue
          }
          if options.isCancelled { throw .cancelled }
        }
        let seconds = Date().timeIntervalSince(start)
        summary.finished += 1
        summary.seconds += seconds
        report(
          position, job, .finished(result, seconds: seconds, warnings: warnings + result.warnings))
      } catch {
        if case .cancelled = error { throw error }
        summary.failed += 1
        report(position, job, .failed(error))
      }
    }
    return summary
  }
}

/// The base pipeline with the last job's LoRAs merged, kept while the next jobs ask for the
/// same list, with a prompt-encoding cache of its own (LoRAs may change the text encoder).
private struct AdaptedPipeline {
  let base: StableDiffusionPipeline
  private var current: (loras: [LoRAFile], pipeline: StableDiffusionPipeline, warnings: [String])?
  private(set) var promptCache = PromptEncodingCache()

  init(base: StableDiffusionPipeline) { self.base = base }

  mutating func pipeline(for loras: [LoRAFile], ignoringUnknownLayers: Bool)
    throws(PipelineError) -> (StableDiffusionPipeline, [String])
  {
    if let current, current.loras == loras { return (current.pipeline, current.warnings) }
    current = nil
    promptCache = PromptEncodingCache()
    guard !loras.isEmpty else {
      current = ([], base, [])
      return (base, [])
    }
    var adapters: [ScaledLoRA] = []
    for file in loras {
      do { adapters.append(ScaledLoRA(try LoRA(contentsOf: file.url), scale: file.scale)) } catch {
        throw .model(error)
      }
    }
    let merged = try base.applying(adapters, ignoringUnknownLayers: ignoringUnknownLayers)
    let warnings =
      merged.ignoredLoRAKeys.isEmpty
      ? []
      : [
        "\(merged.ignoredLoRAKeys.count) LoRA layers match no layer of this model and were skipped, e.g. \(merged.ignoredLoRAKeys[0])"
      ]
    current = (loras, merged, warnings)
    return (merged, warnings)
  }
}
