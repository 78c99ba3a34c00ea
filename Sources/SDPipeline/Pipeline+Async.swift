// Swift concurrency over the synchronous pipeline: an async `generate` that the calling Task's
// cancellation stops inside the running step, and the same run as a stream of events. The work
// runs on a dispatch thread, so a generation of minutes does not hold a cooperative-pool thread.

import Dispatch
import SDTensor

/// What a generation reports as it runs: each step, then the result.
public enum GenerationEvent: Sendable {
  /// A step has finished (its latents and guided prediction).
  case step(GenerationProgress)
  /// The run is done; the last event.
  case finished(GenerationResult)
}

extension StableDiffusionPipeline {
  /// `generate(_:options:promptCache:progress:)` for async code. Cancelling the calling Task
  /// stops the run inside the current step (see `ComputeOptions.cancellation`, which keeps
  /// working too).
  /// - Throws: as the synchronous `generate`; `PipelineError.cancelled` when cancelled.
  public func generate(
    _ request: GenerationRequest, options: ComputeOptions,
    promptCache: PromptEncodingCache? = nil,
    progress: (@Sendable (GenerationProgress) -> Void)? = nil
  ) async throws(PipelineError) -> GenerationResult {
    let flag = CancellationFlag(parent: options.cancellation)
    let cancellable = ComputeOptions(threadCount: options.threadCount, cancellation: flag)
    let outcome = await withTaskCancellationHandler {
      await withCheckedContinuation {
        (continuation: CheckedContinuation<Result<GenerationResult, PipelineError>, Never>) in
        DispatchQueue.global().async {
          continuation.resume(
            returning: Result { () throws(PipelineError) in
              try self.generate(request, options: cancellable, promptCache: promptCache) {
                progress?($0)
                return true
              }
            })
        }
      }
    } onCancel: {
      flag.cancel()
    }
    return try outcome.get()
  }

  /// The generation as events: `.step` after every step, then `.finished`; the stream throws
  /// the generation's error. Ending the iteration early (or cancelling its Task) cancels the run
  /// inside the current step.
  public func events(
    of request: GenerationRequest, options: ComputeOptions,
    promptCache: PromptEncodingCache? = nil
  ) -> AsyncThrowingStream<GenerationEvent, any Error> {
    AsyncThrowingStream { continuation in
      let flag = CancellationFlag(parent: options.cancellation)
      let cancellable = ComputeOptions(threadCount: options.threadCount, cancellation: flag)
      continuation.onTermination = { _ in flag.cancel() }
      DispatchQueue.global().async {
        do {
          let result = try self.generate(
            request, options: cancellable, promptCache: promptCache
          ) {
            continuation.yield(.step($0))
            return true
          }
          continuation.yield(.finished(result))
          continuation.finish()
        } catch {
          continuation.finish(throwing: error)
        }
      }
    }
  }
}
