// The JSON reader's two dialects: strict for safetensors headers, Python's for config files.

import SDTensor
import Testing

@Suite struct JSONTests {
  @Test("config files may hold Python's NaN, Infinity and -Infinity")
  func pythonDialect() throws {
    let text = #"{"a": NaN, "b": Infinity, "c": -Infinity, "d": [-1.5e3, 2]}"#
    let value = try JSONValue.parse(Array(text.utf8), allowingNonFiniteNumbers: true)
    #expect(value["a"]?.doubleValue?.isNaN == true)
    #expect(value["b"]?.doubleValue == .infinity)
    #expect(value["c"]?.doubleValue == -.infinity)
    #expect(value["d"] == .array([.number(-1500), .integer(2)]))
    // Spellings Python does not write stay errors.
    for bad in ["-NaN", "infinity", "Inf", "+Infinity", "NaNx", "-Infinit"] {
      #expect(throws: JSONValue.ParseError.self) {
        _ = try JSONValue.parse(Array(bad.utf8), allowingNonFiniteNumbers: true)
      }
    }
  }

  @Test("the strict dialect (safetensors headers) refuses non-finite numbers")
  func strictDialect() {
    for text in ["NaN", "Infinity", "-Infinity", #"{"x": NaN}"#] {
      #expect(throws: JSONValue.ParseError.self) { _ = try JSONValue.parse(Array(text.utf8)) }
    }
  }
}
