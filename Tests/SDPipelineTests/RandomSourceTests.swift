// TorchGenerator against numbers drawn by torch.Generator("cpu").manual_seed(s) + torch.randn
// (weights/fixtures/rng.safetensors): both the vectorised path (≥ 16 values, with its tail
// redraw) and the scalar path (< 16 values, with its cached second value).

import SDPipeline
import SDTensor
import SDTestSupport
import Testing

@Suite struct RandomSourceTests {
  /// Box–Muller in float32 with a polynomial log/sincos: torch and we evaluate the same
  /// operations, so values agree to a few ulp; 1e-6 of max(1, |x|) leaves room for an FMA placed
  /// differently by the compiler without hiding a wrong draw (those differ by O(1)).
  static let tolerance: Float = 1e-6

  @Test(arguments: [0, 42, 1_234_567] as [UInt64])
  func randnMatchesTorch(seed: UInt64) throws {
    let file = try fixture("rng.safetensors")
    for count in [1, 15, 16, 17, 100, 4096] {
      var generator = TorchGenerator(seed: seed)
      let expected = try file.tensor("randn.seed\(seed).n\(count)")
      let difference = compare(generator.randn([count]), expected, name: "seed \(seed) n \(count)")
      #expect(difference.isWithin(Self.tolerance), "\(difference)")
    }
    var generator = TorchGenerator(seed: seed)
    let latents = try file.tensor("randn.seed\(seed).1x4x8x8")
    #expect(compare(generator.randn([1, 4, 8, 8]), latents).isWithin(Self.tolerance))
  }

  @Test func largeLatentBatch() throws {
    var generator = TorchGenerator(seed: 42)
    let expected = try fixture("rng.safetensors").tensor("randn.seed42.2x4x64x64")
    let difference = compare(generator.randn([2, 4, 64, 64]), expected)
    #expect(difference.isWithin(Self.tolerance), "\(difference)")
  }

  /// One generator drawing latents, then 5 scalars (the cached-value path), then latents again,
  /// as a pipeline with an ancestral sampler does.
  @Test func drawsContinueTheSameStream() throws {
    let expected = try fixture("rng.safetensors").tensor("sequence.seed42")
    var generator = TorchGenerator(seed: 42)
    let drawn = concatenate(
      [generator.randn([256]), generator.randn([5]), generator.randn([256])], axis: 0)
    let difference = compare(drawn, expected)
    #expect(difference.isWithin(Self.tolerance), "\(difference)")
  }
}
