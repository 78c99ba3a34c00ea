// The weights a model is built from: one or more safetensors files behind one key space, with
// shape checks on every read and a record of which keys were read (leftovers are reported).

import Synchronization

/// A key space of tensors backed by safetensors files. Layers read their weights by diffusers key
/// and state the shape they expect; checkpoints with another spelling are mapped onto those keys
/// by a `keyMap` (stored name per diffusers key) instead of a second model implementation.
public final class WeightStore: Sendable {
  /// How a model key is found in the files.
  public struct Source: Sendable, Equatable {
    /// The name under which the tensor is stored.
    public var storedName: String
    /// Whether a stored shape with the same element count may be reshaped to the expected one
    /// (original-layout checkpoints store some linear weights as 1×1 convolutions).
    public var allowsReshape: Bool
    /// Rows (indices of the first axis) of the stored tensor that make up this one, copied out
    /// when read; nil for all of it. OpenCLIP stacks an attention's q, k and v projections in
    /// one `in_proj_weight` `[3·d, d]` where diffusers has three `[d, d]` weights.
    public var rows: Range<Int>?
    /// Whether this tensor is the stored 2-D tensor transposed, materialised when read (OpenCLIP
    /// applies its `text_projection` as x·P, diffusers' Linear stores Pᵀ).
    public var isTransposed: Bool

    /// The tensor stored as `storedName`, read with its stored shape unless `allowsReshape`;
    /// only its `rows` when given, then transposed when `isTransposed`.
    public init(
      storedName: String, allowsReshape: Bool = false, rows: Range<Int>? = nil,
      isTransposed: Bool = false
    ) {
      self.storedName = storedName
      self.allowsReshape = allowsReshape
      self.rows = rows
      self.isTransposed = isTransposed
    }

    /// Whether reading it copies and rearranges the stored data.
    var isDerived: Bool { rows != nil || isTransposed }

    /// The shape of the tensor this source gives from a stored tensor of shape `stored`; nil
    /// when the rows do not fit or a transpose is asked of a tensor that is not 2-D.
    func shape(from stored: [Int]) -> [Int]? {
      var shape = stored
      if let rows {
        guard let first = stored.first, rows.lowerBound >= 0, rows.upperBound <= first else {
          return nil
        }
        shape[0] = rows.count
      }
      if isTransposed {
        guard shape.count == 2 else { return nil }
        shape.reverse()
      }
      return shape
    }

    /// The stored name with the rearrangement, as error messages name the tensor.
    var displayName: String {
      storedName + (rows.map { " rows \($0.lowerBound)..<\($0.upperBound)" } ?? "")
        + (isTransposed ? " transposed" : "")
    }

    /// `stored` (read whole, as `shape(from:)` accepted it) rearranged into this source's tensor.
    func derive(from stored: Tensor) -> Tensor {
      var tensor = stored
      if let rows {
        let width = stored.shape.dropFirst().reduce(1, *)
        tensor = Tensor(
          shape: [rows.count] + stored.shape.dropFirst(),
          scalars: Array(stored.scalars[rows.lowerBound * width..<rows.upperBound * width]))
      }
      return isTransposed ? tensor.transposedLastTwo() : tensor
    }
  }

  private let files: [SafeTensorsFile]
  private let index: [String: (file: Int, entry: SafeTensorsEntry)]
  private let keyMap: [String: Source]
  /// Weights that replace what the files hold under these model keys (merged LoRA layers).
  private let replacements: [String: Weight]
  private let readKeys = Mutex<Set<String>>([])
  /// When set, every key exists and is generated from this seed (see `init(syntheticSeed:)`).
  private let syntheticSeed: UInt64?
  /// Whether `weight(_:shape:)` keeps weights in half precision (half the memory; F32
  /// checkpoints are rounded to the nearest half, F16 ones are kept exactly).
  public let keepsHalfPrecision: Bool

  /// Combines `files` into one key space, optionally renaming keys through `keyMap` (model key ->
  /// source). Keys not in `keyMap` are looked up under their own name.
  /// - Throws: `WeightError.malformedFile` when two files hold the same key.
  public init(
    files: [SafeTensorsFile], keyMap: [String: Source] = [:], keepsHalfPrecision: Bool = false
  ) throws(WeightError) {
    var index: [String: (file: Int, entry: SafeTensorsEntry)] = [:]
    for (position, file) in files.enumerated() {
      for (name, entry) in file.entries {
        if let earlier = index[name] {
          throw .malformedFile(
            path: file.path, reason: "tensor '\(name)' is also in \(files[earlier.file].path)")
        }
        index[name] = (position, entry)
      }
    }
    self.files = files
    self.index = index
    self.keyMap = keyMap
    replacements = [:]
    syntheticSeed = nil
    self.keepsHalfPrecision = keepsHalfPrecision
  }

  /// `base` with the weights under the keys of `replacements` replaced (a model rebuilt from it
  /// reads those, and everything else from `base`'s files, in place as before). Shapes must be
  /// the ones the model expects; reads are recorded afresh.
  public init(_ base: WeightStore, replacing replacements: [String: Weight]) {
    files = base.files
    index = base.index
    keyMap = base.keyMap
    self.replacements = base.replacements.merging(replacements) { $1 }
    syntheticSeed = base.syntheticSeed
    keepsHalfPrecision = base.keepsHalfPrecision
  }

  /// Every model key: the stored names, with those a `keyMap` renames under their model names,
  /// and the keys of replacements.
  public var keys: [String] {
    let renamed = Set(keyMap.values.map(\.storedName))
    let stored = Array(keyMap.keys) + index.keys.filter { !renamed.contains($0) }
    return Set(stored).union(replacements.keys).sorted()
  }

  /// A store that has every key and makes each tensor on demand, deterministically from `seed`
  /// and the key: norm scales near 1, biases small, other weights ~N(0, 1/fan-in). It lets the
  /// benchmark build full-size models without downloading weights; the outputs mean nothing.
  public init(syntheticSeed seed: UInt64, keepsHalfPrecision: Bool = false) {
    files = []
    index = [:]
    keyMap = [:]
    replacements = [:]
    syntheticSeed = seed
    self.keepsHalfPrecision = keepsHalfPrecision
  }

  /// Opens the safetensors files at `paths` as one store.
  public convenience init(
    paths: [String], keyMap: [String: Source] = [:], keepsHalfPrecision: Bool = false
  ) throws(WeightError) {
    var files: [SafeTensorsFile] = []
    for path in paths { files.append(try SafeTensorsFile(path: path)) }
    try self.init(files: files, keyMap: keyMap, keepsHalfPrecision: keepsHalfPrecision)
  }

  /// A description of where the weights come from, for error messages.
  public var origin: String {
    syntheticSeed.map { "synthetic weights (seed \($0))" }
      ?? files.map(\.path).joined(separator: ", ")
  }

  /// Whether `key` can be read.
  public func contains(_ key: String) -> Bool {
    syntheticSeed != nil || replacements[key] != nil
      || index[keyMap[key]?.storedName ?? key] != nil
  }

  /// The shape of `key` as read (a replacement's shape, the stored shape, or what a source's
  /// rows or transpose make of it), or nil when absent or unfit (used to infer sizes a config
  /// leaves out).
  public func shape(of key: String) -> [Int]? {
    if let replaced = replacements[key] { return replaced.shape }
    let source = keyMap[key] ?? Source(storedName: key)
    return index[source.storedName].flatMap { source.shape(from: $0.entry.shape) }
  }

  /// Reads `key`, checking that it has `shape`.
  /// - Throws: `WeightError.missingTensor` or `WeightError.shapeMismatch`, naming the key as the
  ///   model spells it and the file it was looked up in.
  public func tensor(_ key: String, shape: [Int]) throws(WeightError) -> Tensor {
    if let replaced = try replacement(key, shape: shape) {
      return replaced.float(options: ComputeOptions(threadCount: 1))
    }
    if let syntheticSeed { return synthetic(key, shape: shape, seed: syntheticSeed) }
    let (file, entry, source) = try locate(key, shape: shape)
    readKeys.withLock { _ = $0.insert(source.storedName) }
    return source.derive(from: try file.read(entry, name: source.storedName)).reshaped(shape)
  }

  /// Reads `key` as a layer weight: Float32, or half precision when the store keeps it. Data
  /// already stored in that precision (F32, or F16 kept in half precision) is used where it lies
  /// in the file mapping: no copy, and its pages can be dropped between uses
  /// (`releaseResidentPages`).
  /// - Throws: as `tensor(_:shape:)`.
  public func weight(_ key: String, shape: [Int]) throws(WeightError) -> Weight {
    if let replaced = try replacement(key, shape: shape) { return replaced }
    if let syntheticSeed {
      let tensor = synthetic(key, shape: shape, seed: syntheticSeed)
      guard keepsHalfPrecision else { return Weight(tensor) }
      return Weight(shape: shape, halfBits: tensor.scalars.map { Float16($0).bitPattern })
    }
    let (file, entry, source) = try locate(key, shape: shape)
    let storedName = source.storedName
    readKeys.withLock { _ = $0.insert(storedName) }
    if source.isDerived {
      // A part or transpose of a stored tensor is a copy; F16 data survives the round trip
      // through Float32 exactly, F32 data is rounded to half as `readHalf` rounds it.
      let tensor = source.derive(from: try file.read(entry, name: storedName)).reshaped(shape)
      guard keepsHalfPrecision else { return Weight(tensor) }
      return Weight(shape: shape, halfBits: tensor.scalars.map { Float16($0).bitPattern })
    }
    if keepsHalfPrecision {
      if let bits = file.mappedData(of: entry, as: .f16, UInt16.self) {
        return Weight(shape: shape, storage: .mappedHalf(FileBackedPointer(base: bits, file: file)))
      }
      return Weight(shape: shape, halfBits: try file.readHalf(entry, name: storedName))
    }
    if let values = file.mappedData(of: entry, as: .f32, Float.self) {
      return Weight(
        shape: shape, storage: .mappedFloat(FileBackedPointer(base: values, file: file)))
    }
    return Weight(try file.read(entry, name: storedName).reshaped(shape))
  }

  /// Drops the file pages of every tensor read from this store from the process's resident
  /// memory. Weights used in place (F16 data kept in half precision) stay valid: their pages are
  /// read in again, usually from the page cache, at their next use. The pipeline calls this when
  /// a model's phase of a generation ends, so the text encoder's, the UNet's and the VAE's
  /// weights are not all resident at once.
  public func releaseResidentPages() {
    let read = readKeys.withLock { $0 }
    for name in read {
      guard let (fileIndex, entry) = index[name] else { continue }
      files[fileIndex].releasePages(of: entry)
    }
  }

  /// Throws if a file of this store was cut short or modified since it was opened
  /// (`SafeTensorsFile.checkUnchanged`).
  public func checkFilesUnchanged() throws(WeightError) {
    for file in files { try file.checkUnchanged() }
  }

  /// The replacement weight of `key`, checked against `shape`, or nil.
  private func replacement(_ key: String, shape: [Int]) throws(WeightError) -> Weight? {
    guard let replaced = replacements[key] else { return nil }
    guard replaced.shape == shape else {
      throw .shapeMismatch(key: key, expected: shape, found: replaced.shape, file: origin)
    }
    return replaced
  }

  /// The file and entry of `key`, checked against `shape`, and where it is stored.
  private func locate(
    _ key: String, shape: [Int]
  ) throws(WeightError) -> (SafeTensorsFile, SafeTensorsEntry, Source) {
    let source = keyMap[key] ?? Source(storedName: key)
    guard let (fileIndex, entry) = index[source.storedName] else {
      throw .missingTensor(key: source.storedName, file: origin)
    }
    let file = files[fileIndex]
    let derived = source.shape(from: entry.shape)
    let sameCount = entry.shape.reduce(1, *) == shape.reduce(1, *)
    guard derived == shape || (source.allowsReshape && !source.isDerived && sameCount) else {
      throw .shapeMismatch(
        key: source.displayName, expected: shape, found: derived ?? entry.shape, file: file.path)
    }
    return (file, entry, source)
  }

  /// Stored names that no `tensor(_:shape:)` call has read so far, sorted. A model built from the
  /// store should leave none under its prefix: a leftover means a layer was not wired.
  public func unreadKeys(prefix: String = "") -> [String] {
    let read = readKeys.withLock { $0 }
    return index.keys.filter { $0.hasPrefix(prefix) && !read.contains($0) }.sorted()
  }

  private func synthetic(_ key: String, shape: [Int], seed: UInt64) -> Tensor {
    // FNV-1a of the key makes each tensor independent of the order layers are built in.
    var state = key.utf8.reduce(UInt64(0xcbf2_9ce4_8422_2325) ^ seed) {
      ($0 ^ UInt64($1)) &* 0x100_0000_01b3
    }
    let isNormScale = key.hasSuffix(".weight") && shape.count == 1
    let isBias = key.hasSuffix(".bias")
    let fanIn = shape.count > 1 ? shape.dropFirst().reduce(1, *) : 1
    let spread: Float = isBias || isNormScale ? 0.1 : (3 / Float(fanIn)).squareRoot()
    let center: Float = isNormScale ? 1 : 0
    return Tensor(shape: shape) { out in
      for i in 0..<out.count {
        // xorshift64*: uniform in [-1, 1), scaled to the spread.
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        let bits = (state &* 0x2545_F491_4F6C_DD1D) >> 40
        out[i] = center + spread * (Float(bits) / Float(1 << 23) - 1)
      }
    }
  }
}
