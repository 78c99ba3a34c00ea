// Results do not depend on how the work is scheduled: thread count, concurrent generations on
// one shared model, or a cancelled run before. Cancellation itself is prompt and clean.

import Foundation
import SDPipeline
import SDTensor
import SDTestSupport
import Synchronization
import Testing

@Suite(.serialized) struct DeterminismTests {
  let request: GenerationRequest = {
    var request = GenerationRequest(
      prompt: "a red apple on a wooden table", negativePrompt: "green tones", steps: 3, seed: 11)
    request.sampler = .eulerAncestral
    request.width = 64
    request.height = 64
    return request
  }()

  /// Work is split by problem size and reductions run in a fixed order, so 1 and 2 threads give
  /// bit-identical results.
  @Test func threadCountDoesNotChangeTheResult() throws {
    let pipeline = try tinyPipeline.get()
    let one = try pipeline.generate(request, options: ComputeOptions(threadCount: 1))
    let two = try pipeline.generate(request, options: ComputeOptions(threadCount: 2))
    #expect(one.latents == two.latents)
    #expect(one.image == two.image)
  }

  /// Builds with our own GEMM (AVX2 or AVX-512) compute every value with the same sequence of
  /// IEEE operations, so a generation is the same bits on every CPU they run on. This fingerprint
  /// was recorded when the numerics last changed on purpose: a failure on a new machine is a
  /// portability bug; after a deliberate change of the arithmetic, record the value it prints.
  @Test(.enabled(if: Runtime.usesPortableGEMM)) func sameBitsOnEveryCPU() throws {
    let result = try tinyPipeline.get().generate(request, options: ComputeOptions(threadCount: 2))
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a
    func mix(_ byte: UInt8) { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
    for value in result.latents.scalars {
      withUnsafeBytes(of: value.bitPattern) { $0.forEach(mix) }
    }
    result.image.pixels.forEach(mix)
    #expect(String(hash, radix: 16) == "c7f8d65743de4bb6", "fingerprint of this run")
  }

  /// Two generations at once on one shared (immutable) model equal the same two run one after
  /// the other.
  @Test func concurrentGenerationsMatchSequentialOnes() throws {
    let pipeline = try tinyPipeline.get()
    var second = request
    second.seed = 12
    second.negativePrompt = "blurry"
    let requests = [request, second]
    let sequential = try requests.map {
      try pipeline.generate($0, options: ComputeOptions(threadCount: 1)).image
    }
    let concurrent = Mutex<[Int: RGBImage]>([:])
    DispatchQueue.concurrentPerform(iterations: 2) { index in
      if let image = try? pipeline.generate(
        requests[index], options: ComputeOptions(threadCount: 1)
      ).image {
        concurrent.withLock { $0[index] = image }
      }
    }
    let images = concurrent.withLock { $0 }
    #expect(images[0] == sequential[0])
    #expect(images[1] == sequential[1])
    #expect(sequential[0] != sequential[1])
  }

  /// A false from the progress callback stops the run after that step with `.cancelled`; the
  /// next run on the same model is unaffected.
  @Test func cancellationStopsAfterTheCurrentStep() throws {
    let pipeline = try tinyPipeline.get()
    var longer = request
    longer.steps = 50
    var calls = 0
    #expect(throws: PipelineError.cancelled) {
      _ = try pipeline.generate(longer, options: ComputeOptions(threadCount: 2)) { progress in
        calls += 1
        return progress.step < 2
      }
    }
    #expect(calls == 2)
    let after = try pipeline.generate(request, options: ComputeOptions(threadCount: 2))
    let fresh = try pipeline.generate(request, options: ComputeOptions(threadCount: 2))
    #expect(after.image == fresh.image)
  }

  /// A 10 000-character prompt is encoded whole, in chunks of 75 tokens; with
  /// `truncatePrompts` its first 75 tokens are used and the cut ones reported.
  @Test func veryLongPromptIsChunkedOrTruncatedAndReported() throws {
    let pipeline = try tinyPipeline.get()
    var long = request
    long.prompt = String(repeating: "apple ", count: 1667)
    long.steps = 1
    let chunked = try pipeline.generate(long, options: ComputeOptions(threadCount: 2))
    #expect(chunked.truncatedTokens.positive.isEmpty)
    long.truncatePrompts = true
    let truncated = try pipeline.generate(long, options: ComputeOptions(threadCount: 2))
    #expect(truncated.truncatedTokens.positive.count == 1667 - 75)
    #expect(truncated.truncatedTokens.negative.isEmpty)
    #expect(truncated.image != chunked.image)
  }

  @Test func invalidRequestsAreNamed() throws {
    let pipeline = try tinyPipeline.get()
    var cases: [(GenerationRequest, String)] = []
    var bad = request
    bad.width = 60
    cases.append((bad, "width"))
    bad = request
    bad.steps = 0
    cases.append((bad, "steps"))
    bad = request
    bad.guidance.scale = .infinity
    cases.append((bad, "guidanceScale"))
    bad = request
    bad.strength = 0
    cases.append((bad, "strength"))
    bad = request
    bad.clipSkip = 99
    cases.append((bad, "clipSkip"))
    for (request, name) in cases {
      #expect {
        _ = try pipeline.generate(request, options: ComputeOptions(threadCount: 1))
      } throws: { error in
        guard case .invalidArgument(let argument, _) = error as? PipelineError else { return false }
        return argument == name
      }
    }
  }
}
