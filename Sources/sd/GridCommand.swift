// `sd grid --model PATH --prompt TEXT --columns OPTION=A|B|C [--rows OPTION=X|Y] --output F.png`:
// one generation per cell, each cell the command's settings with the row's and the column's
// option set to that cell's value, laid out with labels (the web UIs' X/Y plot).

import Foundation
import SDPipeline
import SDTensor

enum GridCommand {
  static let ownSpecs: [OptionSpec] = [
    OptionSpec(
      name: "columns", valueName: "OPTION=A|B", defaultValue: nil,
      help:
        "the option that varies across columns and its values, e.g. negative-prompt=|blurry|hands"),
    OptionSpec(
      name: "rows", valueName: "OPTION=A|B", defaultValue: "one row",
      help: "the option that varies down the rows, e.g. seed=1|2|3"),
    OptionSpec(
      name: "output", valueName: "FILE.png", defaultValue: "grid.png",
      help: "where to write the grid; - for standard output"),
    OptionSpec(
      name: "cells-dir", valueName: "DIR", defaultValue: nil,
      help: "also write every cell as row<R>-col<C>.png here (cells already there are reused)"),
    OptionSpec(
      name: "overwrite", valueName: nil, defaultValue: nil, help: "replace an existing grid file"),
    .threads,
    OptionSpec(name: "quiet", valueName: nil, defaultValue: nil, help: "no progress output"),
  ]

  static var specs: [OptionSpec] {
    ModelOptions.specs + ownSpecs + [LoRAOptions.ignoreUnknown] + GenerateCommand.requestSpecs
      + [.help]
  }

  static let usage =
    "sd grid --model PATH --prompt TEXT --columns OPTION=A|B [--rows OPTION=X|Y] [options]"

  /// Grids larger than this are refused: each cell is a whole generation.
  static let maximumCells = 256

  /// One axis: the option it sets and its values ("" allowed: the option's empty value).
  struct Axis {
    let option: String
    let values: [String]

    /// `OPTION=A|B|C`; the option must be a request option that takes a value.
    init(_ text: String, flag: String) throws(UsageError) {
      guard let equals = text.firstIndex(of: "=") else {
        throw UsageError("--\(flag) must be OPTION=A|B|..., got '\(text)'")
      }
      let option = String(text[..<equals])
      self.option = option
      guard
        let spec = GenerateCommand.requestSpecs.first(where: { $0.name == option }),
        spec.valueName != nil
      else {
        throw UsageError(
          "--\(flag): '\(option)' is not a generate option with a value (e.g. negative-prompt, seed, guidance-scale, steps, sampler, guidance, lora)"
        )
      }
      values = text[text.index(after: equals)...].split(
        separator: "|", omittingEmptySubsequences: false
      ).map(String.init)
    }

    func label(_ index: Int) -> String {
      "\(option): " + (values[index].isEmpty ? "(none)" : values[index])
    }

    /// The cell's override of this axis.
    func arguments(_ index: Int) throws(UsageError) -> ParsedArguments {
      try ParsedArguments(["--\(option)", values[index]], specs: GenerateCommand.requestSpecs)
    }
  }

  static func run(_ words: [String], cancellation: Cancellation) throws -> Int32 {
    guard
      let arguments = try parsedOrHelp(
        words, specs: specs, usage: usage,
        summary:
          "Generate a labelled grid: every cell uses the options below, with the row's and the column's option set to its value. Values are separated by |."
      )
    else { return 0 }
    let model = try ModelOptions.model(arguments)
    guard let columnText = arguments.string("columns") else {
      throw UsageError("--columns OPTION=A|B|... is required")
    }
    let columns = try Axis(columnText, flag: "columns")
    let rows = try arguments.string("rows").map { text throws(UsageError) in
      try Axis(text, flag: "rows")
    }
    if let rows, rows.option == columns.option {
      throw UsageError("--rows and --columns both vary '\(rows.option)'")
    }
    let rowCount = rows?.values.count ?? 1
    guard rowCount * columns.values.count <= maximumCells else {
      throw UsageError(
        "\(rowCount) x \(columns.values.count) cells; a grid has at most \(maximumCells)")
    }
    let output = try OutputFile(
      option: "output", value: arguments.string("output") ?? "grid.png",
      overwrite: arguments.has("overwrite"))
    let cellsFolder = try arguments.string("cells-dir").map {
      path throws(UsageError) in try BatchCommand.outputFolder(path)
    }
    let threads = try arguments.threadCount()
    let base = arguments.restricted(to: GenerateCommand.requestSpecs)
    var cells: [BatchJob] = []
    for row in 0..<rowCount {
      for column in columns.values.indices {
        var cell = base.overridden(by: try columns.arguments(column))
        if let rows { cell = cell.overridden(by: try rows.arguments(row)) }
        let settings: GenerateCommand.Job
        do { settings = try GenerateCommand.job(cell) } catch let error as UsageError {
          throw UsageError("cell \(rows?.label(row) ?? "") \(columns.label(column)): \(error)")
        }
        cells.append(settings.batchJob(named: "row\(row + 1)-col\(column + 1)"))
      }
    }
    let grid = try ComparisonGrid(
      rowLabels: (0..<rowCount).map { rows?.label($0) ?? "" },
      columnLabels: columns.values.indices.map(columns.label),
      cells: cells,
      legend: legend(base, varying: [columns.option] + (rows.map { [$0.option] } ?? [])))

    var options = Runtime.configure(threads: threads)
    options.cancellation = cancellation.flag
    let reporter = ProgressReporter(quiet: arguments.has("quiet"))
    reporter.note("loading \(model.path); \(cells.count) cells")
    let pipeline = try ModelOptions.load(model, arguments)
    let runner = BatchRunner(
      pipeline: pipeline, options: options, modelName: model.lastPathComponent,
      ignoringUnknownLoRALayers: arguments.has("lora-ignore-unknown"))
    let image = try grid.render(
      with: runner, cellsInto: cellsFolder, progress: reporter.callback(cancellation)
    ) { position, job, outcome in
      switch outcome {
      case .finished(_, let seconds, let warnings):
        warnings.forEach { reporter.warn($0) }
        reporter.note(
          String(format: "[%d/%d] %@ in %.1f s", position + 1, cells.count, job.name, seconds))
      case .skipped: reporter.note("[\(position + 1)/\(cells.count)] \(job.name): reused")
      case .failed(let error): writeError("sd: cell \(job.name): \(message(for: error))\n")
      }
    }
    let png = try image.pngData(text: [("grid", "\(grid.legend)")])
    try cancellation.commitAll([try cancellation.prepare(png, for: output)])
    reporter.finish(
      "wrote \(output.displayName) (\(image.width)x\(image.height), \(cells.count) cells)")
    return 0
  }

  /// The settings every cell shares: the prompt, then each option given on the command line
  /// that no axis varies.
  static func legend(_ base: ParsedArguments, varying: [String]) -> String {
    var parts: [String] = []
    for spec in GenerateCommand.requestSpecs where !varying.contains(spec.name) {
      if spec.valueName == nil {
        if base.has(spec.name) { parts.append(spec.name) }
      } else {
        parts += base.strings(spec.name).map { "\(spec.name) \($0)" }
      }
    }
    return parts.joined(separator: ", ")
  }
}
