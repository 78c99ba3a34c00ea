// The async API: Task cancellation stops a run, the event stream carries every step and the
// same image as the synchronous call, and errors read well through `localizedDescription`.

import Foundation
import SDPipeline
import SDTensor
import SDTestSupport
import Synchronization
import Testing

private func tinyRequest(steps: Int) -> GenerationRequest {
  var request = GenerationRequest(prompt: "a red apple", negativePrompt: "blurry", steps: steps)
  (request.width, request.height) = (64, 64)
  return request
}

@Suite struct ConcurrencyTests {
  let pipeline: StableDiffusionPipeline
  let options = ComputeOptions(threadCount: 2)

  init() throws { pipeline = try StableDiffusionPipeline(modelAt: URL(fileURLWithPath: tinyModel)) }

  /// Cancelling the Task once it runs ends the 400-step run with `.cancelled`. The cancel is
  /// sent from the progress callback's thread: a polling loop on the cooperative pool can starve
  /// while parallel tests hold its threads, and see the run end first.
  @Test func taskCancellationStopsTheRun() async throws {
    let steps = Atomic<Int>(0)
    let running = Mutex<Task<GenerationResult, any Error>?>(nil)
    let task = Task { [pipeline, options] in
      try await pipeline.generate(tinyRequest(steps: 400), options: options) { _ in
        steps.add(1, ordering: .relaxed)
        running.withLock { $0?.cancel() }
      }
    }
    running.withLock { $0 = task }
    await #expect(throws: PipelineError.cancelled) { try await task.value }
    #expect(steps.load(ordering: .relaxed) < 400)
  }

  /// The stream reports every step in order, then the image the synchronous call makes.
  @Test func eventsCarryEveryStepAndTheResult() async throws {
    let request = tinyRequest(steps: 3)
    var reported: [Int] = []
    var image: RGBImage?
    for try await event in pipeline.events(of: request, options: options) {
      switch event {
      case .step(let progress): reported.append(progress.step)
      case .finished(let result): image = result.image
      }
    }
    #expect(reported == Array(1...reported.count) && reported.count >= 3)
    #expect(image == (try await pipeline.generate(request, options: options).image))
  }

  /// `localizedDescription` is the error's own sentence, not "The operation could not be
  /// completed".
  @Test func errorsDescribeThemselves() {
    let error: any Error = PipelineError.invalidArgument(name: "steps", reason: "must be positive")
    #expect(error.localizedDescription == "steps: must be positive")
    let weights: any Error = WeightError.unreadableFile(path: "/x", reason: "gone")
    #expect(weights.localizedDescription.contains("/x"))
  }
}
