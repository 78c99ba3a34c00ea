// Comparing a whole generation with a diffusers run recorded in a fixture file: the latents
// after every step (`<case>.latents.<i>`) and the decoded image (`<case>.image`), within the
// DESIGN.md tolerance (rounding differences of ~1e-7 grow over the steps; 1e-4 of the scale holds).

import Foundation
import SDPipeline
import SDTensor
import SDTestSupport
import Testing

/// Runs `request` and compares the latents after every step and the decoded image with the
/// case `name` of the reference file. Returns the number of steps run and the worst
/// max |Δ| / scale over the latents.
func expectMatchesReference(
  _ pipeline: StableDiffusionPipeline, _ request: GenerationRequest, reference: SafeTensorsFile,
  name: String, sourceLocation: SourceLocation = #_sourceLocation
) throws -> (steps: Int, worst: Float) {
  var steps: [Tensor] = []
  let result = try pipeline.generate(request, options: ComputeOptions(threadCount: 2)) {
    steps.append($0.latents)
    return true
  }
  let recorded = reference.names.filter { $0.hasPrefix("\(name).latents.") }.count
  #expect(
    steps.count == recorded, "\(name): \(steps.count) steps, diffusers recorded \(recorded)",
    sourceLocation: sourceLocation)
  var worst: Float = 0
  for (index, latents) in steps.enumerated() where index < recorded {
    let difference = compare(
      latents, try reference.tensor("\(name).latents.\(index)"), name: "\(name).latents.\(index)")
    #expect(
      difference.isWithin(referenceTolerance), "\(difference)", sourceLocation: sourceLocation)
    worst = max(worst, difference.maxAbsolute / difference.scale)
  }
  let image = compare(
    result.decoded, try reference.tensor("\(name).image"), name: "\(name).image")
  #expect(image.isWithin(referenceTolerance), "\(image)", sourceLocation: sourceLocation)
  return (steps.count, max(worst, image.maxAbsolute / image.scale))
}
