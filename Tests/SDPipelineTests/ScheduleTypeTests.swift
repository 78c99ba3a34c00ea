// Align Your Steps and the other schedule types against diffusers
// (weights/make_schedule_fixtures.py): the σs each sampler steps on and whole generations.

import Foundation
import SDPipeline
import SDTensor
import SDTestSupport
import Testing

@Suite struct ScheduleTypeTests {
  @Test(arguments: [
    ("ays_euler", SchedulerKind.euler, 10),
    ("ays_euler_7", .euler, 7),
    ("ays_euler_a", .eulerAncestral, 10),
    ("ays_lms", .lms, 12),
    ("ays_dpm", .dpmSolverMultistep, 10),
    ("ays_dpm_6", .dpmSolverMultistep, 6),
  ])
  func alignYourStepsMatchesDiffusers(name: String, sampler: SchedulerKind, steps: Int) throws {
    let reference = try fixture("schedules-sd15.safetensors")
    let pipeline = try tinyPipeline.get()
    if let scheduler = try makeScheduler(
      sampler, configuration: pipeline.schedulerConfiguration, steps: steps,
      schedule: .alignYourSteps) as? any SigmaScheduler
    {
      let expected = try reference.tensor("\(name).sigmas").scalars
      #expect(scheduler.sigmas.map(Float.init) == expected)
    }
    let request = GenerationRequest(
      prompt: "a red apple on a wooden table", negativePrompt: "green tones", steps: steps,
      seed: 42, sampler: sampler, schedule: .alignYourSteps, width: 64, height: 64)
    let outcome = try expectMatchesReference(pipeline, request, reference: reference, name: name)
    print("ays \(name): max |Δ|/scale \(outcome.worst)")
  }

  @Test func tenStepsAreThePublishedList() throws {
    let scheduler = try makeScheduler(
      .euler, configuration: .stableDiffusion15, steps: 10, schedule: .alignYourSteps)
    let sigmas = try #require(scheduler as? any SigmaScheduler).sigmas
    #expect(
      sigmas.map(Float.init)
        == [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0])
  }

  @Test func karrasScheduleEqualsTheKarrasSampler() throws {
    let named = try makeScheduler(
      .dpmSolverMultistepKarras, configuration: .stableDiffusion15, steps: 8)
    let chosen = try makeScheduler(
      .dpmSolverMultistep, configuration: .stableDiffusion15, steps: 8, schedule: .karras)
    #expect(named.timesteps == chosen.timesteps)
  }

  @Test func samplersWithoutSigmasRefuseASchedule() {
    for sampler in [SchedulerKind.ddim, .pndm, .lcm, .tcd] {
      #expect(throws: PipelineError.self) {
        try makeScheduler(
          sampler, configuration: .stableDiffusion15, steps: 10, schedule: .alignYourSteps)
      }
    }
    #expect(throws: PipelineError.self) {
      try makeScheduler(
        .eulerAncestral, configuration: .stableDiffusion15, steps: 10, schedule: .karras)
    }
  }
}
